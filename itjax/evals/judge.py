"""The `judge` suite: prompt by prompt, is the tuned model's answer better than its base's, as a judge model reads
them? Constraint checkers read only the form of an answer; a judge reads whether it answers.

  itjax eval --model SRC --suites judge [--judge SRC] [--judge_mode relevance|pairwise] [--judge_template FILE]

Both models answer the same prompts greedily: the forgetting suite's general prompts (as many as it asks: --limit,
or config.eval.n_general / subset in training), or the prompts of --data judge=FILE (JSONL with a "prompt" string on
every line: {"prompt": ...} or IFEval's format). The judge only reads their answers.

relevance (the default). The judge is any language model: --judge SRC, else the base (in training, the frozen
params with the adapters off). An answer's relevance is the judge's pointwise mutual information between the prompt
and the answer, per answer token, in nats:

    relevance = [log p(answer | the prompt as the user turn) - log p(answer | an empty user turn)] / answer tokens

both turns in the judge's chat template (the `alpaca` layout for a judge without one), scored by teacher forcing
(scoring.nll_after; no generation). It is high when the prompt makes the answer more likely: an answer about what
was asked. Formatting without content (quote marks and blank lines, a list of [placeholders]) or a reply that would
fit any prompt is about as likely without the prompt as with it, so it scores near 0 (or below, when the prompt
makes it less likely still); an answer written for another prompt scores below one written for this prompt. An
empty answer scores 0. With SmolLM2-135M-Instruct judging the short answers of tests/test_judge.py, answers written
for their prompt averaged 1.8 nats per token, the same answers after the next prompt -0.4, and formatting alone
-0.3 to -1.2.

pairwise. The judge is an instruction-tuned model the user supplies (--judge SRC is required): a larger local model,
say. It reads a template (judge_pairwise.txt beside this module, or --judge_template FILE) whose {question},
{answer_a} and {answer_b} are filled in, as one user turn, and replies greedily in at most VERDICT_TOKENS tokens.
Each prompt is asked twice: the model's answer as A and the base's as B, then the other way round. The verdict of a
reply is its first 'A' or 'B' standing alone as a word ("A", "[[B]]" and "Answer: B." count; so would a sentence
that opens with the article "A", which is why the template asks for the letter alone); a reply without one gives
no verdict. Two answers equal but for surrounding whitespace tie without asking.

Metrics, under 'model' (percentages of the prompts unless said otherwise):
  win_rate, loss_rate,   the model's answer is better, worse, neither. relevance: its relevance is higher (lower)
  tie_rate               than the base's by more than TIE_MARGIN = 0.05 nats per token (a likelihood ratio of about
                         5% per token), else a tie. pairwise: a win or loss only when both orders prefer the same
                         answer; orders that disagree, a missing verdict or equal answers are ties
  win_p                  the two-sided exact sign test of wins against losses (ties left out): small when the split
                         is too uneven for chance
  relevance              relevance mode: the mean relevance of the subject's answers (nats per token; also under
                         'base', with the delta)
  position_consistency   pairwise: of the prompts the judge was asked about (n_judged), the share whose two orders
                         named the same answer; a judge that always names the first answer scores 0
  n_prompts, n_judged
The rates compare with a base (--base SRC, or a training workdir's own): without one, relevance mode reports the
model's relevance alone (judged by --judge, or by the model itself) and pairwise mode reports nothing; the note says
so. judge.jsonl holds one row per prompt: the prompt, both answers, their relevance or the two verdicts, the
outcome, and whether each answer is a non-answer (non_answer, non_answer_kind, base_non_answer; itjax.evals.non_answer).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence

from itjax.errors import InputNotFound, UserError
from itjax.evals import paired
from itjax.evals.general_prompts import GENERAL_PROMPTS
from itjax.evals.items import pct
from itjax.evals.registry import register
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Sources, Suite
from itjax.io.jsonl import objects

MODES = ("relevance", "pairwise")
TIE_MARGIN = 0.05  # nats per answer token: a smaller difference in relevance is a tie
NEUTRAL_PROMPT = ""  # the user turn of the baseline: the same chat, with nothing asked
VERDICT_TOKENS = 16  # the longest pairwise reply read
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "judge_pairwise.txt")
PLACEHOLDERS = ("question", "answer_a", "answer_b")
_PLACEHOLDER = re.compile(r"\{(question|answer_a|answer_b)\}")
_VERDICT = re.compile(r"\b([AB])\b")
NOT_PERCENT = frozenset({"win_p", "relevance", "n_prompts", "n_judged"})


# --- relevance ----------------------------------------------------------------------------------------------------

def relevance(judge: Subject, prompts: Sequence[str], answers: Sequence[str], desc: str | None = None) -> list[float]:
  """The judge's relevance of answers[i] to prompts[i] (see the module's docstring), nats per answer token. Each
  distinct prompt is run once, and each distinct answer once without a prompt."""
  from itjax.evals import scoring
  if len(prompts) != len(answers):
    raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
  tokenizer = judge.tokenizer
  asked = list(dict.fromkeys(prompts)) + [NEUTRAL_PROMPT]
  contexts = judge.encode([[{"role": "user", "content": p}] for p in asked])
  neutral = len(asked) - 1
  where = {p: i for i, p in enumerate(asked[:-1])}
  ids = [tuple(tokenizer.encode(a, add_bos=False)) for a in answers]
  wanted = list(dict.fromkeys([(where[p], a) for p, a in zip(prompts, ids)] + [(neutral, a) for a in ids]))
  sums = scoring.nll_after(judge.config, judge.params, contexts, wanted, tokenizer.pad_id, desc)
  nll = {key: total for key, (total, _) in zip(wanted, sums)}
  return [(nll[(neutral, a)] - nll[(where[p], a)]) / len(a) if a else 0.0 for p, a in zip(prompts, ids)]


def compare(model: Sequence[float], base: Sequence[float], margin: float = TIE_MARGIN) -> list[str]:
  """'win', 'loss' or 'tie' per prompt: the model's relevance above the base's by more than `margin`, below it by
  more, or neither."""
  return ["win" if m - b > margin else "loss" if b - m > margin else "tie" for m, b in zip(model, base)]


def rates(outcomes: Sequence[str]) -> dict[str, float]:
  """win_rate, loss_rate and tie_rate (percent of the outcomes) and win_p, the sign test of wins against losses."""
  n = max(1, len(outcomes))
  wins, losses = outcomes.count("win"), outcomes.count("loss")
  return {"win_rate": 100.0 * wins / n, "loss_rate": 100.0 * losses / n,
          "tie_rate": 100.0 * (len(outcomes) - wins - losses) / n, "win_p": paired.sign_test_p(losses, wins)}


# --- pairwise -----------------------------------------------------------------------------------------------------

def read_template(path: str | None = None, flag: str = "--judge_template") -> str:
  """The text of a pairwise template (the default: TEMPLATE); UserError naming `flag` and the file when it lacks a
  placeholder."""
  path = path or TEMPLATE
  if not os.path.exists(path):
    raise InputNotFound(f"{flag} {path}: no such file")
  with open(path, encoding="utf-8") as f:
    try:
      text = f.read()
    except UnicodeDecodeError as e:
      raise UserError(f"{flag} {path}: not UTF-8 text ({e})") from None
  missing = [p for p in PLACEHOLDERS if "{" + p + "}" not in text]
  if missing:
    raise UserError(f"{flag} {path}: no {', '.join('{' + p + '}' for p in missing)} placeholder (a pairwise "
                    f"template holds {{question}}, {{answer_a}} and {{answer_b}})")
  return text


def render(template: str, question: str, answer_a: str, answer_b: str) -> str:
  """The template with its placeholders filled in, in one pass (a placeholder inside an answer stays as written)."""
  values = {"question": question, "answer_a": answer_a, "answer_b": answer_b}
  return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def verdict(reply: str) -> str | None:
  """'A' or 'B': the first of them standing alone as a word in the reply; None when there is neither."""
  found = _VERDICT.search(reply)
  return found.group(1) if found else None


@dataclasses.dataclass
class ModelJudge:
  """A model as a pairwise judge: each rendered prompt is one user turn of its chat, answered greedily in at most
  VERDICT_TOKENS tokens. Called with one prompt, or many at once with `batch`."""
  subject: Subject
  settings: Settings

  def batch(self, prompts: Sequence[str]) -> list[str]:
    settings = dataclasses.replace(self.settings, max_new_tokens=VERDICT_TOKENS)
    return self.subject.respond([[{"role": "user", "content": p}] for p in prompts], settings, "judge")[0]

  def __call__(self, prompt: str) -> str:
    return self.batch([prompt])[0]


def _ask(judge, prompts: list[str]) -> list[str]:
  replies = list(judge.batch(prompts)) if hasattr(judge, "batch") else [judge(p) for p in prompts]
  if len(replies) != len(prompts) or not all(isinstance(r, str) for r in replies):
    raise TypeError(f"a judge answers each prompt with a string: {len(prompts)} prompts, got {replies!r:.200}")
  return replies


def pairwise(questions: Sequence[str], model_answers: Sequence[str], base_answers: Sequence[str],
             judge: Callable[[str], str], template: str | None = None) -> tuple[dict[str, float], list[dict]]:
  """(metrics, one row per question) of the pairwise comparison (see the module's docstring). `judge` maps a
  rendered prompt to its reply: any callable (a stub in tests), or one with a `batch(prompts)` method that answers
  many at once (ModelJudge)."""
  template = read_template() if template is None else template
  asked = [i for i, (m, b) in enumerate(zip(model_answers, base_answers)) if m.strip() != b.strip()]
  prompts = [render(template, questions[i], model_answers[i], base_answers[i]) for i in asked]
  prompts += [render(template, questions[i], base_answers[i], model_answers[i]) for i in asked]
  replies = _ask(judge, prompts) if asked else []
  rows = [{"prompt": q, "response": m, "base_response": b, "outcome": "tie"}
          for q, m, b in zip(questions, model_answers, base_answers)]
  consistent = 0
  for k, i in enumerate(asked):
    first, second = replies[k], replies[len(asked) + k]
    verdicts = [verdict(first), verdict(second)]
    if verdicts in (["A", "B"], ["B", "A"]):
      consistent += 1
      rows[i]["outcome"] = "win" if verdicts[0] == "A" else "loss"
    rows[i].update(verdicts=verdicts, replies=[first, second])
  metrics = {**rates([r["outcome"] for r in rows]), "n_prompts": float(len(rows)), "n_judged": float(len(asked))}
  if asked:
    metrics["position_consistency"] = 100.0 * consistent / len(asked)
  return metrics, rows


# --- the suite ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Records:
  """What the suite asks, and of which judge: `judge` is a model's path, None (relevance: the base), or a callable
  from a rendered prompt to a reply (pairwise; what tests pass instead of a model)."""
  prompts: list[str]
  mode: str = "relevance"
  judge: str | Callable[[str], str] | None = None
  template: str = ""  # pairwise: the template's text
  loaded: dict = dataclasses.field(default_factory=dict, repr=False)  # the judge model, loaded on first use

  def judge_subject(self) -> Subject | None:
    """The judge as a Subject, loaded once (a judge without a chat template reads the alpaca layout); None when
    the records name no model."""
    if not isinstance(self.judge, str):
      return None
    if "subject" not in self.loaded:
      from itjax.interop.loading import load_model
      judge = load_model(self.judge)
      template = None if judge.tokenizer.chat_template else "alpaca"
      self.loaded["subject"] = Subject("judge", judge.config, judge.params, judge.tokenizer, template)
    return self.loaded["subject"]


def read_prompts(path: str, limit: int | None = None) -> list[str]:
  """The 'prompt' of every line of a JSONL file (the first `limit`); `path:line: what is wrong` otherwise."""
  prompts = []
  for where, record in objects(path, "judge prompts"):
    if limit and len(prompts) >= limit:
      break
    if not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
      raise UserError(f"{where}: 'prompt' must be a non-empty string")
    prompts.append(record["prompt"])
  if not prompts:
    raise UserError(f"{path}: no prompts")
  return prompts


def _base_answers(base: Subject, chats: list[list[dict]], settings: Settings) -> dict:
  """The base's answers to the chats, kept with the base (whose params do not change) with the judgements of them."""
  kept = base.cache.setdefault("judge", {})
  key = (tuple(c[0]["content"] for c in chats), settings.max_new_tokens)
  if kept.get("key") != key:
    kept.clear()
    kept.update(key=key, answers=base.respond(chats, settings, "judge", reuse=True)[0], relevance={})
  return kept


def _relevance_outputs(model_answers: list[str], kept: dict | None, judge: Subject, judge_key: str | None,
                       records: Records, settings: Settings) -> dict[str, SuiteOutput]:
  prompts = records.prompts
  desc = "judge (relevance)" if settings.progress else None
  scored = kept["relevance"].get(judge_key) if kept is not None and judge_key else None
  same = kept is not None and list(model_answers) == list(kept["answers"])  # before training: scored once
  if kept is None or scored is not None:
    mine = scored if same else relevance(judge, prompts, model_answers, desc)
  elif same:
    mine = scored = relevance(judge, prompts, model_answers, desc)
  else:
    both = relevance(judge, prompts + prompts, model_answers + kept["answers"], desc)
    mine, scored = both[:len(prompts)], both[len(prompts):]
  if kept is not None and judge_key:
    kept["relevance"][judge_key] = scored
  rows = [{"prompt": p, "response": a, "relevance": r} for p, a, r in zip(prompts, model_answers, mine)]
  metrics = {"relevance": sum(mine) / len(mine), "n_prompts": float(len(prompts))}
  if kept is None:
    note = "no base: the win, loss and tie rates need one (--base SRC, or a training workdir's own)"
    return {"model": SuiteOutput(metrics, rows, {}, note if records.judge else
                                 note + "; the model judged its own answers (--judge SRC names a judge)")}
  outcomes = compare(mine, scored)
  for row, answer, r, outcome in zip(rows, kept["answers"], scored, outcomes):
    row.update(base_response=answer, base_relevance=r, outcome=outcome)
  metrics = {**rates(outcomes), **metrics}
  bars = {"wins": metrics["win_rate"], "ties": metrics["tie_rate"], "losses": metrics["loss_rate"]}
  mirrored = {"wins": metrics["loss_rate"], "ties": metrics["tie_rate"], "losses": metrics["win_rate"]}
  base_metrics = {"relevance": sum(scored) / len(scored), "n_prompts": float(len(prompts))}
  return {"model": SuiteOutput(metrics, rows, bars), "base": SuiteOutput(base_metrics, [], mirrored)}


def _mark_non_answers(rows: list[dict]) -> None:
  """`non_answer` and `non_answer_kind` of each row's answer (itjax.evals.non_answer), and `base_non_answer` of the
  base's where the row has one: a win over a non-answer, or of one, reads differently."""
  from itjax.evals import degenerate, non_answer
  bases = [r["base_response"] for r in rows if "base_response" in r]
  reference = degenerate.reference_ratio(bases) if bases else degenerate.DEFAULT_REFERENCE_RATIO
  non_answer.mark(rows, reference)
  for row in rows:
    if "base_response" in row:
      row["base_non_answer"] = non_answer.is_non_answer(row["prompt"], row["base_response"], reference)


class Judge(Suite):
  """The model's answers against the base's, read by a judge (see the module's docstring). The base's answers,
  and the base's relevance under an unchanging judge, are kept with the base subject, so training computes them
  once."""
  name, unit = "judge", "share of prompts (%)"
  not_percent = Suite.not_percent | NOT_PERCENT
  live_roles = ("model", "base")
  data = "JSONL of prompts ({\"prompt\": ...} or IFEval's format)"

  def read(self, sources: Sources) -> Records:
    """The prompts and the judge's settings, checked before any model loads."""
    given = sources.inputs

    def flag(name: str) -> str:
      return f"config.eval.{name}" if sources.live else f"--{name}"

    mode = given.judge_mode or "relevance"
    if mode not in MODES:
      raise UserError(f"{flag('judge_mode')}: unknown mode {mode!r}; known: {', '.join(MODES)}")
    judge = given.judge or None
    if judge is not None:
      if not os.path.exists(judge):
        raise InputNotFound(f"{flag('judge')} {judge}: no such file or directory")
      if not (os.path.isdir(judge) or judge.endswith(".gguf")):
        raise UserError(f"{flag('judge')} {judge}: expected a Hugging Face model directory, a .gguf file or a "
                        "training workdir")
    if mode == "pairwise" and judge is None:
      raise UserError(f"{flag('judge_mode')} pairwise needs {flag('judge')} SRC, an instruction-tuned model to "
                      "judge (relevance mode's judge is the base)")
    if given.judge_template and mode != "pairwise":
      raise UserError(f"{flag('judge_template')} {given.judge_template}: a template of {flag('judge_mode')} "
                      f"pairwise, and the mode is {mode}")
    template = read_template(given.judge_template, flag("judge_template")) if mode == "pairwise" else ""
    path = sources.data.get("judge")
    if path:
      prompts = read_prompts(path, sources.limit)
    else:
      prompts = list(GENERAL_PROMPTS[:given.n_general or sources.subset or None])
    return Records(prompts, mode, judge, template)

  def base_state(self, base: Subject):
    """The base's answers and their relevance under the base as judge (another judge is a model path, whose file
    may change: not kept)."""
    kept = base.cache.get("judge")
    if not kept or "base" not in kept.get("relevance", {}):
      return None
    prompts, max_new_tokens = kept["key"]
    return {"prompts": list(prompts), "max_new_tokens": max_new_tokens, "answers": list(kept["answers"]),
            "relevance": list(kept["relevance"]["base"])}

  def restore_base_state(self, base: Subject, state) -> None:
    base.cache["judge"] = {"key": (tuple(state["prompts"]), state["max_new_tokens"]),
                           "answers": list(state["answers"]), "relevance": {"base": list(state["relevance"])}}

  def itemize(self, output: SuiteOutput) -> None:
    """A prompt's outcome against the base (win_rate, loss_rate, tie_rate) and its relevance."""
    for r in output.rows:
      scores = {}
      if "outcome" in r:
        scores = {f"{o}_rate": pct(r["outcome"] == o) for o in ("win", "loss", "tie")}
      if "relevance" in r:
        scores["relevance"] = r["relevance"]
      r["item"], r["scores"] = f"general:{r['prompt']}", scores

  def evaluate(self, subjects: dict[str, Subject], records: Records, settings: Settings) -> dict[str, SuiteOutput]:
    outputs = self._evaluate(subjects, records, settings)
    _mark_non_answers(outputs["model"].rows)
    return outputs

  def _evaluate(self, subjects: dict[str, Subject], records: Records, settings: Settings) -> dict[str, SuiteOutput]:
    model, base = subjects["model"], subjects.get("base")
    chats = [[{"role": "user", "content": p}] for p in records.prompts]
    kept = _base_answers(base, chats, settings) if base is not None else None
    if kept is not None and model.is_base:  # the adapters are still zero: the model answers what the base does
      answers = list(kept["answers"])
    else:
      answers = model.respond(chats, settings, "judge", reuse=True)[0]
    if records.mode == "relevance":
      loaded = records.judge_subject()
      judge = loaded or base or model
      key = records.judge if loaded is not None else "base" if base is not None else None
      return _relevance_outputs(answers, kept, judge, key, records, settings)
    if kept is None:
      rows = [{"prompt": p, "response": a} for p, a in zip(records.prompts, answers)]
      return {"model": SuiteOutput({"n_prompts": float(len(rows))}, rows, {},
                                   "no base: pairwise mode compares the model's answers with a base's (--base SRC, "
                                   "or a training workdir's own)")}
    if callable(records.judge):
      judge = records.judge
    elif isinstance(records.judge, str):
      judge = ModelJudge(records.judge_subject(), settings)
    else:
      raise UserError("the judge suite's pairwise mode needs a judge: --judge SRC")
    metrics, rows = pairwise(records.prompts, answers, kept["answers"], judge, records.template)
    bars = {"wins": metrics["win_rate"], "ties": metrics["tie_rate"], "losses": metrics["loss_rate"]}
    return {"model": SuiteOutput(metrics, rows, bars)}


register(Judge())
