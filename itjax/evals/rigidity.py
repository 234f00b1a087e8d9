"""The `rigidity` suite: does a tuned model still do a task when its prompt has typos, other casing or spacing,
reworded or reordered constraints, a system turn, or no chat template? (itjax.data.perturb makes the prompts.)

Each subject answers the clean prompts and every perturbed prompt in one generation pass; each answer is checked by
the record's own verifier (IFEval records: IFEval's strict checkers). Metrics, in percent:

  clean            accuracy on the clean prompts
  accuracy/NAME    accuracy on the prompts perturbation NAME applied to; n/NAME how many those were
  drop/NAME        clean accuracy on those same records minus accuracy/NAME (positive: the perturbation hurts)
  worst_drop       the largest drop/NAME; spread: the population std of the accuracy/NAME values
  empty_rate       share of the perturbed prompts answered with nothing
  refusal_rate     share of the perturbed prompts answered with a refusal or a request to rephrase (`refusal_class`)

IFEval records given beside the task records get the same metrics, prefixed `ifeval/`, over the perturbations that
apply to free text (rewording and reordering need a task record's prompt_parts).
"""

from __future__ import annotations

import re
import statistics
from typing import Callable, Iterable

from itjax.data.perturb import FREE_TEXT_PERTURBATIONS, PERTURBATIONS, chat_of, check_perturbations, perturb
from itjax.data.tasks import verify
from itjax.errors import UserError
from itjax.evals import ifeval, non_answer
from itjax.evals.items import pct
from itjax.evals import tasks as eval_tasks
from itjax.evals.registry import register
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Sources, Suite

__all__ = ["PERTURBATIONS", "check_perturbations", "refusal_class", "evaluate", "evaluate_ifeval", "summarize"]

CLEAN = "clean"
# Meaning classes of a response that does not do the task; the first class whose pattern matches names it.
REFUSAL_PATTERNS: dict[str, tuple[str, ...]] = {
    "decline": (
        r"\bI\s*(?:cannot|can ?not|can't|won't|will not|am (?:not able|unable)|'m (?:not able|unable)) (?:to )?"
        r"(?:help|assist|do|complete|comply|provide|answer|fulfil|fulfill|perform|process)\b",
        r"\bI(?:'m| am) sorry,? but\b",
        r"\bsorry,? (?:but )?I (?:cannot|can ?not|can't)\b",
        r"\bI (?:must|have to) (?:decline|refuse)\b",
    ),
    "clarify": (
        r"\b(?:could|can|would) you (?:please )?(?:rephrase|clarify|elaborate|be more specific|provide more|explain "
        r"what you mean)",
        r"\bdid you mean\b",
        r"\bI (?:don't|do not|didn't|did not) (?:quite )?understand\b",
        r"\bplease (?:provide|give|share) (?:more|additional|further|some more)\b",
        r"\bplease (?:rephrase|clarify)\b",
        r"\b(?:it|that|this)(?:'s| is) (?:not clear|unclear)\b",
        r"\bI(?:'m| am) not sure what you (?:mean|want|are asking)\b",
    ),
}
_REFUSALS = {name: [re.compile(p, re.I) for p in patterns] for name, patterns in REFUSAL_PATTERNS.items()}


def refusal_class(text: str) -> str | None:
  """'decline' (the response refuses), 'clarify' (it asks to rephrase or for more) or None (it attempts the task)."""
  text = text.replace("\u2019", "'")
  for name, patterns in _REFUSALS.items():
    if any(p.search(text) for p in patterns):
      return name
  return None


def _percent(flags: Iterable[bool]) -> float:
  flags = list(flags)
  return 100.0 * sum(flags) / len(flags)


def model_inputs(records: list[dict], perturbations: Iterable[str], seed: int) -> list[tuple[int, str, dict]]:
  """(record index, perturbation or 'clean', input) for every record's clean prompt and each perturbation that
  applies to it."""
  inputs = []
  for index, record in enumerate(records):
    inputs.append((index, CLEAN, {"messages": chat_of(record), "template": True}))
    for name in perturbations:
      changed = perturb(record, name, seed)
      if changed is not None:
        inputs.append((index, name, changed))
  return inputs


def encode_input(subject: Subject, model_input: dict) -> list[int]:
  """Token ids: the chat through the subject's template, or (template False) the raw user text."""
  if model_input["template"]:
    return subject.tokenizer.encode_chat(model_input["messages"], add_generation_prompt=True,
                                         template=subject.template)
  return subject.tokenizer.encode(model_input["messages"][-1]["content"])


def _encoded(subject: Subject, inputs: list[tuple[int, str, dict]], refused: dict[str, str]) -> list[list[int]]:
  """Token ids of every input; a perturbed input the chat template refuses (a system turn, say) is dropped from
  `inputs` and its perturbation named in `refused` with the reason. A clean input that fails raises."""
  prompts, kept = [], []
  for item in inputs:
    try:
      prompts.append(encode_input(subject, item[2]))
    except Exception as e:  # templates raise their own errors (jinja2's, ValueError, ...)
      if item[1] == CLEAN:
        raise
      refused.setdefault(item[1], f"{type(e).__name__}: {e}")
      continue
    kept.append(item)
  inputs[:] = kept
  return prompts


def _row(index: int, name: str, model_input: dict, response: str, passed: bool) -> dict:
  system = [m["content"] for m in model_input["messages"] if m["role"] == "system"]
  return {"index": index, "perturbation": name, "prompt": model_input["messages"][-1]["content"],
          **({"system": system[0]} if system else {}), "template": model_input["template"], "response": response,
          "passed": bool(passed), "refusal": refusal_class(response)}


def summarize(rows: list[dict], perturbations: Iterable[str]) -> tuple[dict[str, float], dict[str, float]]:
  """(metrics, bars) of rows with index, perturbation ('clean' for the clean prompts), response, passed, refusal."""
  clean = {r["index"]: r["passed"] for r in rows if r["perturbation"] == CLEAN}
  metrics = {"clean": _percent(clean.values())}
  bars = {CLEAN: metrics["clean"]}
  drops = []
  for name in perturbations:
    applied = [r for r in rows if r["perturbation"] == name]
    if applied:
      bars[name] = metrics[f"accuracy/{name}"] = _percent(r["passed"] for r in applied)
      metrics[f"drop/{name}"] = _percent(clean[r["index"]] for r in applied) - bars[name]
      drops.append(metrics[f"drop/{name}"])
    metrics[f"n/{name}"] = float(len(applied))
  if drops:
    metrics["worst_drop"] = max(drops)
    metrics["spread"] = statistics.pstdev([v for k, v in bars.items() if k != CLEAN])
  perturbed = [r for r in rows if r["perturbation"] != CLEAN]
  if perturbed:
    metrics["empty_rate"] = _percent(not r["response"].strip() for r in perturbed)
    metrics["refusal_rate"] = _percent(r["refusal"] is not None for r in perturbed)
  return metrics, bars


def _task_rows(records: list[dict], inputs: list[tuple[int, str, dict]], responses: list[str]) -> list[dict]:
  rows = []
  for (index, name, model_input), response in zip(inputs, responses):
    record = records[index]
    rows.append({"source": "tasks", **_row(index, name, model_input, response, verify(response, record["verifier"])),
                 "types": record["types"], **({"split": record["split"]} if "split" in record else {})})
  return rows


def _ifeval_rows(records: list[dict], inputs: list[tuple[int, str, dict]], responses: list[str]) -> list[dict]:
  """Rows judged by IFEval's strict checkers (a response passes when it follows all the record's instructions)."""
  _, scored = ifeval.score([records[index] for index, _, _ in inputs], responses)
  return [{"source": "ifeval", **_row(index, name, model_input, response, judged["follow_all_strict"]),
           "key": records[index]["key"]}
          for (index, name, model_input), response, judged in zip(inputs, responses, scored)]


def _unapplied_note(metrics: dict[str, float], perturbations: Iterable[str], prefix: str,
                    refused: dict[str, str]) -> str | None:
  """Names the perturbations that applied to no record (those a template refused are noted apart)."""
  missing = [name for name in perturbations if metrics.get(f"{prefix}n/{name}") == 0 and name not in refused]
  if not missing:
    return None
  hint = (" (rewording and reordering need the prompt_parts that itjax make-tasks writes)"
          if {"reworded", "reordered"} & set(missing) else "")
  return f"{', '.join(missing)}: applied to no {prefix.rstrip('/') or 'task'} record{hint}"


def _run(subject: Subject, settings: Settings, parts: list[tuple[str, list[dict], tuple[str, ...], Callable]]
         ) -> SuiteOutput:
  """One generation pass over every (prefix, records, perturbations, row maker) part; metrics prefixed per part."""
  batches = [model_inputs(records, names, settings.seed) for _, records, names, _ in parts]
  refused: dict[str, str] = {}
  prompts = [ids for inputs in batches for ids in _encoded(subject, inputs, refused)]
  outs = subject.generate(prompts, settings, "rigidity", reuse=True)  # clean prompts: the tasks suite's answers
  responses = [subject.tokenizer.decode(o.tokens) for o in outs]
  metrics: dict[str, float] = {}
  rows: list[dict] = []
  bars: dict[str, float] = {}
  notes = [f"{name}: inputs the chat template refused were left out ({why})" for name, why in refused.items()]
  start = 0
  for (prefix, records, names, make_rows), inputs in zip(parts, batches):
    part_rows = make_rows(records, inputs, responses[start:start + len(inputs)])
    start += len(inputs)
    part_metrics, part_bars = summarize(part_rows, names)
    metrics.update({prefix + k: v for k, v in part_metrics.items()})
    bars.update({prefix + k: v for k, v in part_bars.items()})
    rows += part_rows
    notes.append(_unapplied_note(metrics, names, prefix, refused))
  return SuiteOutput(metrics, rows, bars, note="; ".join(n for n in notes if n) or None)


def evaluate(subject: Subject, records: list[dict], settings: Settings,
             perturbations: Iterable[str] | None = PERTURBATIONS,
             ifeval_records: list[dict] | None = None) -> SuiteOutput:
  """Accuracy of task records under each perturbation (None: all), and of IFEval records too when given; one
  generation pass for all of it."""
  names = check_perturbations(perturbations)
  if not records:
    raise UserError("the rigidity suite needs task records (itjax make-tasks writes them)")
  parts = [("", records, names, _task_rows)]
  if ifeval_records:
    parts.append(("ifeval/", ifeval_records, _free_text(names), _ifeval_rows))
  return _run(subject, settings, parts)


def _free_text(names: tuple[str, ...]) -> tuple[str, ...]:
  return tuple(n for n in names if n in FREE_TEXT_PERTURBATIONS)


def evaluate_ifeval(subject: Subject, ifeval_records: list[dict], settings: Settings,
                    perturbations: Iterable[str] | None = FREE_TEXT_PERTURBATIONS) -> SuiteOutput:
  """IFEval records alone under the perturbations that apply to free text; metrics prefixed `ifeval/`."""
  if not ifeval_records:
    raise UserError("evaluate_ifeval needs IFEval records")
  return _run(subject, settings, [("ifeval/", ifeval_records, _free_text(check_perturbations(perturbations)),
                                   _ifeval_rows)])


class Rigidity(Suite):
  name, unit = "rigidity", "verified accuracy (%)"

  def read(self, sources: Sources) -> tuple | None:
    """(task records, perturbations, IFEval records or None): sources.subset task records per split, under the
    perturbations of sources.inputs (all when None), with the run's IFEval records beside them in `itjax eval`
    (training scores the tasks alone); None in training without task records."""
    perturbations = check_perturbations(sources.inputs.perturbations)
    records = eval_tasks.read_records(sources, sources.subset)
    if records is None:
      return None
    return records, perturbations, None if sources.live else ifeval.read_records(sources)

  def evaluate(self, subjects: dict[str, Subject], records: tuple, settings: Settings) -> dict[str, SuiteOutput]:
    outputs = super().evaluate(subjects, records, settings)
    non_answer.add_non_answers(outputs)
    return outputs

  def itemize(self, output: SuiteOutput) -> None:
    """A clean prompt's accuracy; a perturbed one's accuracy, its drop from the same prompt clean, refusal and empty
    answer; each answer's non-answer. Metrics of IFEval rows are prefixed ifeval/, as the suite's are."""
    clean = {(r["source"], r["index"]): r["passed"] for r in output.rows if r["perturbation"] == CLEAN}
    for r in output.rows:
      prefix, name = "ifeval/" if r["source"] == "ifeval" else "", r["perturbation"]
      if name == CLEAN:
        scores = {"clean": pct(r["passed"])}
      else:
        scores = {f"accuracy/{name}": pct(r["passed"]), "refusal_rate": pct(r["refusal"] is not None),
                  "empty_rate": pct(not r["response"].strip())}
        if (r["source"], r["index"]) in clean:
          scores[f"drop/{name}"] = pct(clean[r["source"], r["index"]]) - pct(r["passed"])
      r["item"] = f"{r['source']}:{r['index']}:{name}"
      r["scores"] = {prefix + k: v for k, v in scores.items()}
      if "non_answer" in r:  # over every answer, as the suite's rate is
        r["scores"]["non_answer_rate"] = pct(r["non_answer"])

  def answer(self, subject: Subject, records: tuple, settings: Settings) -> SuiteOutput:
    task_records, perturbations, ifeval_records = records
    return evaluate(subject, task_records, settings, perturbations, ifeval_records)


register(Rigidity())
