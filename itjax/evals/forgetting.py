"""The `forgetting` suite: what a tuned model lost of what its base could do.

  kl_general, kl_tasks  mean per-token KL(base || tuned), nats, along the base's own greedy answers to the general
                        prompts and to the task prompts (the answers end with the end-of-sequence id when the base
                        stopped), so it weighs what the base would actually say
  perplexity            exp(mean NLL) of a general English text (every token predicted once, windows of WINDOW
  bits_per_byte         tokens overlapping by one), and its total NLL in bits over the text's UTF-8 bytes
  retention             of the probes the base answers right, the share the tuned model still answers right;
  gained                of the probes the base answers wrong, the share the tuned model answers right: with
                        model_correct against base_correct it tells forgetting (fewer right) from churn (as many
                        right, other ones: a small model right by a thin margin flips answers both ways under
                        any change of its weights, which lowers retention alone); lost_probes and
                        gained_probes count them, and net_loss_p is the two-sided exact sign test of one against
                        the other (McNemar): a small value with more lost than gained is forgetting beyond churn;
                        base_correct and model_correct are each one's share of all probes (percent)
  degenerate_rate       share of the answers to the general prompts that are degenerate (itjax.evals.degenerate),
  mean_length           and their mean length in generated tokens
  non_answer_rate       share of the answers to the general prompts that do not attempt what was asked
                        (itjax.evals.non_answer); newly_non_answer and no_longer_non_answer count the prompts the
                        tuned model stopped and started answering, newly_degenerate and no_longer_degenerate the
                        same for degenerate answers, each with its sign test (NAME_change_p; itjax.evals.paired)

Probes are short questions with checkable answers, easy forms of the task generators' operations (arithmetic, unit
conversion with their units, date arithmetic, a string operation on their words), plus a --probes file; an answer
is right when it states the expected value: the number or date as a standalone token, the word case-insensitively,
a list's items in order and adjacent. No probe's answer is in its question, so echoing the question is not right.
KL and retention compare with a reference model and appear under `model`; without one the suite reports the
rest, and says so.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import random
import re

from itjax.data import tasks as task_gen
from itjax.errors import InputNotFound, UserError
from itjax.evals import degenerate, non_answer, paired
from itjax.evals.general_prompts import GENERAL_PROMPTS
from itjax.evals.items import pct
from itjax.evals import tasks as eval_tasks
from itjax.evals.registry import register
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Sources, Suite
from itjax.io.jsonl import objects

WINDOW = 512
# The metrics of the docstring that are not percentages (what evals.png leaves off its percent axis).
NOT_PERCENT = frozenset({"kl_general", "kl_tasks", "perplexity", "bits_per_byte", "text_bytes", "text_tokens",
                         "lost_probes", "gained_probes", "net_loss_p"}) | paired.NOT_PERCENT
# Easy forms of the task generators' operations (their own draws, e.g. "42 * 25 - 18" or 165 days after a date,
# are beyond a 135M base: SmolLM2-135M-Instruct answered 9 of 72 right, several by echoing the prompt's numbers).
# Probes are asked plainly. They once ended with "Reply with only the answer.", which is word for word one of the
# tasks' own format constraints: a model tuned to obey it then answered with a bare value and, at 135M, without the
# working it needs to get the value right, so retention measured the trained constraint, not what the model knew.
PROBE_KINDS = ("sum", "product", "unit", "next_day", "first_letter")
N_PROBES = 48  # probes asked by default; config.eval.n_probes may ask more


def probe_count(asked: int | None, subset: int | None) -> int:
  """How many generated probes the suite asks: `asked` (n_probes) if given, else `subset`, at most N_PROBES."""
  return asked or min(subset or N_PROBES, N_PROBES)


# --- probes -----------------------------------------------------------------------------------------------------

def _probe(kind: str, rng: random.Random) -> tuple[str, int | str]:
  """One probe question of a kind and its answer, which the question does not contain."""
  if kind == "sum":
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    return f"What is {a} + {b}?", a + b
  if kind == "product":
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return f"What is {a} times {b}?", a * b
  if kind == "unit":
    big, small, factor = rng.choice(task_gen.UNITS)
    value = rng.randint(2, 19)
    return f"How many {small} are in {value} {big}?", value * factor
  if kind == "next_day":
    day = datetime.date(2000, 1, 1) + datetime.timedelta(days=rng.randint(0, 9000))
    return (f"What date is the day after {day.isoformat()}? Use the YYYY-MM-DD format.",
            (day + datetime.timedelta(days=1)).isoformat())
  word = rng.choice([w for w in task_gen.WORDS if w[0] not in "ai"])  # 'a' and 'i' are words of their own
  return f'What is the first letter of the word "{word}"?', word[0]


def make_probes(n: int, seed: int) -> list[dict]:
  """n probes (prompt, answer, op), cycling through PROBE_KINDS; the same for the same seed. No question is asked
  twice while its kind has others left (a repeated probe would count twice in retention)."""
  rng = random.Random(f"itjax-probes:{seed}")
  probes, asked = [], set()
  for i in range(n):
    kind = PROBE_KINDS[i % len(PROBE_KINDS)]
    for _ in range(200):
      prompt, answer = _probe(kind, rng)
      if prompt not in asked:
        break
    asked.add(prompt)
    probes.append({"prompt": prompt, "answer": answer, "op": kind})
  return probes


def read_probes(path: str) -> list[dict]:
  """Probes of a JSONL file: 'prompt' (a non-empty string) and 'answer' (an integer, a string or a list of them)
  on every line; a problem stops with `path:line: what is wrong`."""
  if not os.path.exists(path):
    raise InputNotFound(f"--probes {path}: no such file")
  probes = []
  for where, record in objects(path, "probes"):
    if not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
      raise UserError(f"{where}: 'prompt' must be a non-empty string")
    if "answer" not in record:
      raise UserError(f"{where}: missing 'answer' (an integer, a string or a list the response must state)")
    answer = record["answer"]
    items = answer if isinstance(answer, list) else [answer]
    if not items or not all(isinstance(a, (int, str)) and not isinstance(a, bool) and str(a).strip() for a in items):
      raise UserError(f"{where}: 'answer' must be an integer, a non-empty string or a non-empty list of them, "
                      f"got {answer!r}")
    probes.append({"prompt": record["prompt"], "answer": answer, "op": record.get("op", "file")})
  if not probes:
    raise UserError(f"{path}: no probes")
  return probes


def _words(text: str) -> list[str]:
  """Numbers (thousands separators dropped), dates like 2012-03-05 and words, casefolded."""
  text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text.casefold())
  return re.findall(r"[0-9]+(?:-[0-9]+)*|[^\W\d_]+", text)


def states_answer(response: str, answer) -> bool:
  """Whether the response states the answer: a number, date or word as a standalone token; a list's items in
  order and adjacent, punctuation between them ignored (and numbers too when no item is a number: list markers)."""
  expected = [w for item in (answer if isinstance(answer, list) else [answer]) for w in _words(str(item))]
  found = _words(response)
  if isinstance(answer, list) and not any(w[0].isdigit() for w in expected):
    found = [w for w in found if not w[0].isdigit()]
  n = len(expected)
  return n > 0 and any(found[i:i + n] == expected for i in range(len(found) - n + 1))


# --- the text -------------------------------------------------------------------------------------------------

def read_text(path: str, max_bytes: int | None = None) -> str:
  """The text of a UTF-8 file, cut at the last paragraph break (else line break) within `max_bytes`."""
  if not os.path.exists(path):
    raise InputNotFound(f"--text {path}: no such file")
  with open(path, encoding="utf-8", errors="strict") as f:
    try:
      text = f.read()
    except UnicodeDecodeError as e:
      raise UserError(f"--text {path}: not UTF-8 text ({e})") from None
  if max_bytes and len(text.encode("utf-8")) > max_bytes:
    head = text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    cut = head.rfind("\n\n")
    cut = cut if cut > 0 else head.rfind("\n")
    text = head[:cut] if cut > 0 else head
  if not text.strip():
    raise UserError(f"--text {path}: the text is empty (perplexity needs some text)")
  return text


def text_windows(tokenizer, text: str, window: int = WINDOW) -> tuple[list[list[int]], int]:
  """Windows of at most `window` tokens covering [prefix] + text tokens, each overlapping the previous by one
  token, so every text token is predicted exactly once; and the number of text tokens. The prefix is the
  tokenizer's BOS, or its end-of-sequence id when it has none (the first token needs something to follow)."""
  ids = tokenizer.encode(text, add_bos=False)
  prefix = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_ids[0]
  ids = [prefix] + ids
  windows = [ids[s:s + window] for s in range(0, max(1, len(ids) - 1), window - 1)]
  return windows, len(ids) - 1


def text_metrics(subject: Subject, text: str, window: int = WINDOW) -> dict[str, float]:
  from itjax.evals import scoring
  windows, n_tokens = text_windows(subject.tokenizer, text, window)
  sums = scoring.nll(subject.config, subject.params, windows, [1] * len(windows), subject.tokenizer.pad_id)
  total = sum(s for s, _ in sums)
  assert sum(c for _, c in sums) == n_tokens
  n_bytes = len(text.encode("utf-8"))
  return {"perplexity": math.exp(total / n_tokens), "bits_per_byte": total / math.log(2) / n_bytes,
          "text_tokens": float(n_tokens), "text_bytes": float(n_bytes)}


# --- the suite ------------------------------------------------------------------------------------------------

def _answers(subject: Subject, chats: list[list[dict]], settings: Settings, desc: str):
  """(prompt ids, Generated) per chat, in one generate call."""
  prompts = subject.encode(chats)
  return prompts, subject.generate(prompts, settings, desc, reuse=True)


def _with_eos(subject: Subject, prompt: list[int], out) -> tuple[list[int], int]:
  """The prompt and answer as one sequence (plus the end-of-sequence id when the answer stopped), and where the
  answer starts."""
  answer = list(out.tokens) + ([subject.tokenizer.eos_ids[0]] if out.finished else [])
  return list(prompt) + answer, len(prompt)


def _mean_kl(model: Subject, base: Subject, pairs: list[tuple[list[int], int]]
             ) -> tuple[float, list[tuple[float, int]]]:
  """Mean KL(base || model) per answer token over all the pairs, and per pair (its mean, 0 for an empty answer, and
  its answer tokens)."""
  from itjax.evals import scoring
  sums = scoring.kl(base.config, base.params, model.config, model.params, [s for s, _ in pairs],
                    [st for _, st in pairs], base.tokenizer.pad_id)
  total, count = sum(s for s, _ in sums), sum(c for _, c in sums)
  return total / max(count, 1), [(s / c if c else 0.0, c) for s, c in sums]


def _rows(result: dict, general: list[list[dict]], probes: list[dict]) -> list[dict]:
  """One row per general prompt and per probe, with the answer (and the probe's verdict)."""
  out = [{"kind": "general", "prompt": c[-1]["content"], "response": result["texts"][i],
          "response_tokens": len(result["outs"][i].tokens)} for i, c in enumerate(general)]
  out += [{"kind": "probe", "prompt": p["prompt"], "op": p["op"], "answer": p["answer"],
           "response": result["texts"][len(general) + i], "correct": result["correct"][i]}
          for i, p in enumerate(probes)]
  return out


def retention_metrics(model_correct: list[bool], base_correct: list[bool]) -> dict[str, float]:
  """Which probes the model lost (the base answered them right) and gained (the base did not), as counts, shares
  and a sign test; retention is undefined (absent) when the base answered none right."""
  base_right = [i for i, ok in enumerate(base_correct) if ok]
  base_wrong = [i for i, ok in enumerate(base_correct) if not ok]
  lost = sum(not model_correct[i] for i in base_right)
  gained = sum(model_correct[i] for i in base_wrong)
  m = {"lost_probes": float(lost), "gained_probes": float(gained), "net_loss_p": paired.sign_test_p(lost, gained),
       "base_correct": 100.0 * len(base_right) / max(1, len(base_correct)),
       "model_correct": 100.0 * sum(model_correct) / max(1, len(model_correct))}
  if base_right:
    m["retention"] = 100.0 * (len(base_right) - lost) / len(base_right)
  if base_wrong:
    m["gained"] = 100.0 * gained / len(base_wrong)
  return m


def evaluate(model: Subject, base: Subject | None, task_records: list[dict] | None, settings: Settings,
             text: str, probes: list[dict] | None = None, base_cache: dict | None = None,
             model_is_base: bool = False, n_general: int | None = None) -> dict[str, SuiteOutput]:
  """{'model': ..., 'base': ...} ('base' only with a reference). `text` is the general text itself; `probes`
  default to N_PROBES generated ones (settings.limit of them, if fewer), and given ones are all asked;
  `base_cache` (a dict kept by the caller) holds the base's answers and figures across calls, e.g. between
  evaluations during training, where the base does not change. `model_is_base` says the model computes what the
  base does (adapters still zero, before the first step): its answers are then the base's, generated once; the
  divergences are still measured. `n_general`: the general prompts answered (default settings.limit)."""
  limit = settings.limit
  general = [[{"role": "user", "content": p}] for p in GENERAL_PROMPTS[:n_general or limit]]
  probes = probes if probes is not None else make_probes(min(limit or N_PROBES, N_PROBES), settings.seed)
  probe_chats = [[{"role": "user", "content": p["prompt"]}] for p in probes]
  task_chats = [[m for m in r["messages"] if m["role"] != "assistant"] for r in task_records or []]
  n_general, n_probes = len(general), len(probe_chats)

  def answer(subject: Subject, with_tasks: bool) -> dict:
    chats = general + probe_chats + (task_chats if with_tasks else [])
    prompts, outs = _answers(subject, chats, settings, "forgetting")
    texts = [subject.tokenizer.decode(o.tokens) for o in outs]
    return {"prompts": prompts, "outs": outs, "texts": texts, "text": text_metrics(subject, text),
            "correct": [states_answer(t, p["answer"]) for t, p in zip(texts[n_general:n_general + n_probes],
                                                                       probes)]}

  theirs = None
  if base is not None:
    cache_key = (n_general, n_probes, len(task_chats), len(text))
    if base_cache is not None and base_cache.get("key") == cache_key:
      theirs = base_cache["answers"]
    else:
      theirs = answer(base, True)
      if base_cache is not None:
        base_cache.update(key=cache_key, answers=theirs)
  if model_is_base and theirs is not None:
    n = n_general + n_probes
    mine = {**theirs, "prompts": theirs["prompts"][:n], "outs": theirs["outs"][:n], "texts": theirs["texts"][:n]}
  else:
    mine = answer(model, False)

  outputs = {"model": SuiteOutput({}, _rows(mine, general, probes))}
  if theirs is not None:
    outputs["base"] = SuiteOutput({}, _rows(theirs, general, probes))
  general_outputs = {k: SuiteOutput({}, [r for r in o.rows if r["kind"] == "general"]) for k, o in outputs.items()}
  degenerate.add_degeneration(general_outputs)
  non_answer.add_non_answers(general_outputs)

  for label, result in (("model", mine), ("base", theirs)):
    if result is None:
      continue
    metrics = outputs[label].metrics
    metrics.update(general_outputs[label].metrics)
    metrics.update(result["text"])
  m = outputs["model"].metrics
  if theirs is None:
    outputs["model"].note = ("no reference model: kl_general, kl_tasks and retention need one (--base SRC, or a "
                             "training workdir, whose base is its reference)")
  else:
    pairs = [_with_eos(base, p, o) for p, o in zip(theirs["prompts"], theirs["outs"])]

    def kl(some: list) -> tuple[float, list]:  # a model that computes what the base does: exactly 0, not run
      return (0.0, [(0.0, len(seq) - start) for seq, start in some]) if model_is_base else _mean_kl(model, base, some)

    m["kl_general"], kl_rows = kl(pairs[:n_general])
    for row, (value, count) in zip(outputs["model"].rows, kl_rows):
      row["kl"], row["kl_tokens"] = value, count
    if task_chats:
      m["kl_tasks"], _ = kl(pairs[n_general + n_probes:])
    m.update(retention_metrics(mine["correct"], theirs["correct"]))
    for row, right in zip(outputs["model"].rows[n_general:], theirs["correct"]):
      row["base_correct"] = right  # with `correct`: the probe lost, gained or kept
    if "retention" not in m:
      outputs["model"].note = "retention is undefined: the base answered no probe right"
  m["n_general"], m["n_probes"] = float(n_general), float(n_probes)
  for label, output in outputs.items():
    correct = (theirs if label == "base" else mine)["correct"]
    output.bars = {"degenerate answers": output.metrics.get("degenerate_rate", 0.0),
                   "non-answers": output.metrics.get("non_answer_rate", 0.0),
                   "probes right": 100.0 * sum(correct) / max(1, n_probes)}
  return outputs


def itemize(rows: list[dict]) -> None:
  """Each row's verdicts (itjax.evals.items): a general prompt's non-answer, degenerate answer and KL (weighted by
  its answer tokens, as kl_general is); a probe's answer right (model_correct) and, by the base's verdict, kept
  (retention) or gained."""
  for r in rows:
    if r["kind"] == "general":
      scores = {k: pct(r[f]) for k, f in (("non_answer_rate", "non_answer"), ("degenerate_rate", "degenerate"))
                if f in r}
      if "kl" in r:
        scores["kl_general"] = r["kl"]
        r["weights"] = {"kl_general": r["kl_tokens"]}
    else:
      scores = {"model_correct": pct(r["correct"])}
      if "base_correct" in r:
        scores["retention" if r["base_correct"] else "gained"] = pct(r["correct"])
    r["item"], r["scores"] = f"{r['kind']}:{r['prompt']}", scores


@dataclasses.dataclass(frozen=True)
class Records:
  """What the suite asks: task prompts (for kl_tasks; None: none), the general text, the probes and how many of
  the general prompts."""
  tasks: list[dict] | None
  text: str
  probes: list[dict]
  n_general: int | None  # None: all of GENERAL_PROMPTS


class Forgetting(Suite):
  """The model against the base (the frozen params with the adapters off, in training): the base's answers are
  kept with the base subject, so training computes them once."""
  name, unit = "forgetting", "share of answers (%)"
  not_percent = NOT_PERCENT
  live_roles = ("model", "base")

  def read(self, sources: Sources) -> Records:
    """The general text (its first text_bytes), inputs.n_probes generated probes (default: sources.subset of them,
    at most N_PROBES) drawn with sources.seed plus those of the probes file, sources.subset task records per split
    and inputs.n_general general prompts (default: sources.subset)."""
    from itjax.evals import text as general_text
    given = sources.inputs
    text = read_text(given.text or general_text.default_path(), given.text_bytes)
    probes = make_probes(probe_count(given.n_probes, sources.subset), sources.seed)
    probes += read_probes(given.probes) if given.probes else []
    return Records(eval_tasks.read_records(sources, sources.subset), text, probes, given.n_general or sources.subset)

  def itemize(self, output: SuiteOutput) -> None:
    itemize(output.rows)

  def evaluate(self, subjects: dict[str, Subject], records: Records, settings: Settings) -> dict[str, SuiteOutput]:
    model, base = subjects["model"], subjects.get("base")
    return evaluate(model, base, records.tasks, settings, records.text, records.probes,
                    base.cache.setdefault(self.name, {}) if base is not None else None, model_is_base=model.is_base,
                    n_general=records.n_general)


register(Forgetting())
