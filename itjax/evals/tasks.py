"""The `tasks` suite: verified accuracy on generated verifiable tasks (itjax.data.tasks), seen vs held-out types.

A record is `heldout` when any of its types was held out of training (the tasks directory's tasks.json says which;
the generator's default set otherwise) and `seen` otherwise, so a workdir's validation.jsonl is all seen and its
heldout.jsonl all held-out. Each greedy answer is checked by the record's own verifier.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

from itjax.data.tasks import DEFAULT_HOLDOUT, expand_holdout, make_splits, verify
from itjax.errors import InputNotFound, UserError
from itjax.evals import non_answer
from itjax.evals.items import pct
from itjax.evals.registry import register
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Sources, Suite
from itjax.io.jsonl import objects

SPLIT_FILES = {"seen": "validation.jsonl", "heldout": "heldout.jsonl"}


def _held_types(directory: str) -> set[str]:
  summary = os.path.join(directory, "tasks.json")
  if os.path.exists(summary):
    with open(summary, encoding="utf-8") as f:
      return set(json.load(f)["holdout"])
  return expand_holdout(DEFAULT_HOLDOUT)


def read_tasks_file(path: str) -> list[dict]:
  """Task records of a JSONL file; a malformed line stops with `path:line: what is wrong`."""
  records = []
  for where, record in objects(path, "tasks file"):
    if not isinstance(record.get("verifier"), dict) or not isinstance(record.get("types"), list) or not isinstance(
        record.get("messages"), list) or not record["messages"]:
      raise UserError(f"{where}: expected a task record with 'messages', 'types' and 'verifier' "
                      "(as itjax make-tasks writes them)")
    records.append(record)
  if not records:
    raise UserError(f"{path}: no task records")
  return records


def load(source: str | None, limit: int | None = None) -> list[dict]:
  """Records tagged with their 'split': from a tasks directory (validation.jsonl = seen, heldout.jsonl = held-out),
  a tasks file, or (None) generated with the default settings. `limit` applies per split."""
  if source is None:
    splits = make_splits(2000, 0, DEFAULT_HOLDOUT)
    tagged = [{**r, "split": s} for s, name in (("seen", "validation"), ("heldout", "heldout")) for r in splits[name]]
  elif os.path.isdir(source):
    tagged = []
    for split, name in SPLIT_FILES.items():
      path = os.path.join(source, name)
      if os.path.exists(path) and os.path.getsize(path) > 0:
        tagged += [{**r, "split": split} for r in read_tasks_file(path)]
    if not tagged:
      raise UserError(f"{source}: no {' or '.join(SPLIT_FILES.values())} with task records")
  else:
    if not os.path.exists(source):
      raise InputNotFound(f"{source}: no such tasks file")
    held = _held_types(os.path.dirname(os.path.abspath(source)))
    tagged = [{**r, "split": "seen" if held.isdisjoint(r["types"]) else "heldout"} for r in read_tasks_file(source)]
  if limit:
    count: dict[str, int] = defaultdict(int)
    kept = []
    for r in tagged:
      count[r["split"]] += 1
      if count[r["split"]] <= limit:
        kept.append(r)
    tagged = kept
  return tagged


def score(records: list[dict], responses: list[str], tokens: list[int] | None = None) -> SuiteOutput:
  """Accuracy (percent) per split and per type; rows repeat each record and add the response and its verdict."""
  rows, by_split, by_type = [], defaultdict(list), defaultdict(list)
  for i, (record, response) in enumerate(zip(records, responses)):
    passed = bool(verify(response, record["verifier"]))
    by_split[record["split"]].append(passed)
    for t in record["types"]:
      by_type[t].append(passed)
    rows.append({**record, "prompt": record["messages"][0]["content"], "response": response, "passed": passed,
                 **({"response_tokens": tokens[i]} if tokens else {})})
  pct = lambda xs: 100.0 * sum(xs) / len(xs)  # noqa: E731
  metrics = {split: pct(by_split[split]) for split in ("seen", "heldout") if by_split[split]}
  metrics.update({f"n_{split}": float(len(by_split[split])) for split in ("seen", "heldout")})
  metrics["all"] = pct([r["passed"] for r in rows])
  if tokens:
    metrics["mean_response_tokens"] = sum(tokens) / len(tokens)
  bars = {t: pct(v) for t, v in sorted(by_type.items())}
  metrics.update({f"type/{t}": v for t, v in bars.items()})
  return SuiteOutput(metrics, rows, bars)


def evaluate(subject: Subject, records: list[dict], settings: Settings) -> SuiteOutput:
  chats = [[m for m in r["messages"] if m["role"] != "assistant"] for r in records]
  responses, tokens = subject.respond(chats, settings, "tasks", reuse=True)
  return score(records, responses, tokens)


def read_records(sources: Sources, limit: int | None) -> list[dict] | None:
  """The run's task records, `limit` per split (read once per limit): from sources.data['tasks'], else generated
  with the default settings; None in training without a tasks directory."""
  source = sources.data.get("tasks")
  if source is None and sources.live:
    return None
  return sources.once(("tasks", limit), lambda: load(source, limit))


def add_answered(output: SuiteOutput) -> None:
  """SPLIT_answered (seen_answered, heldout_answered, all_answered): the share of records passed by an answer that
  is not a non-answer (itjax.evals.non_answer), and hack_rate: the share of passes that are non-answers."""
  rows, m = output.rows, output.metrics
  for split in ("seen", "heldout", "all"):
    some = [r for r in rows if split == "all" or r["split"] == split]
    if some:
      m[f"{split}_answered"] = 100.0 * sum(r["passed"] and not r["non_answer"] for r in some) / len(some)
  passed = [r for r in rows if r["passed"]]
  if passed:
    m["hack_rate"] = 100.0 * sum(r["non_answer"] for r in passed) / len(passed)
  non_answer.put_first(m, ("seen", "seen_answered", "heldout", "heldout_answered", "all", "all_answered",
                           "hack_rate", "non_answer_rate"))


def itemize(rows: list[dict]) -> None:
  """Each row's verdicts (itjax.evals.items): its split's accuracy and the same by answers only, its types', the
  non-answer rate, and hack_rate where it passed."""
  for r in rows:
    passed, answered = r["passed"], r["passed"] and not r.get("non_answer", False)
    scores = {r["split"]: pct(passed), "all": pct(passed), **{f"type/{t}": pct(passed) for t in r["types"]}}
    if "non_answer" in r:
      scores.update({f"{r['split']}_answered": pct(answered), "all_answered": pct(answered),
                     "non_answer_rate": pct(r["non_answer"])})
      if passed:
        scores["hack_rate"] = pct(r["non_answer"])
    r["item"], r["scores"] = f"task:{r['prompt']}", scores


class Tasks(Suite):
  """Verified accuracy per split and type; non_answer_rate, the same accuracies counting answers only
  (SPLIT_answered) and hack_rate (add_answered)."""
  name, unit = "tasks", "verified accuracy (%)"
  data = "task records (a JSONL file or a tasks directory, as itjax make-tasks writes them)"

  def evaluate(self, subjects: dict[str, Subject], records: list[dict], settings: Settings) -> dict[str, SuiteOutput]:
    outputs = super().evaluate(subjects, records, settings)
    non_answer.add_non_answers(outputs)
    for output in outputs.values():
      add_answered(output)
    return outputs

  def read(self, sources: Sources) -> list[dict] | None:
    return read_records(sources, sources.limit)

  def itemize(self, output: SuiteOutput) -> None:
    itemize(output.rows)

  def answer(self, subject: Subject, records: list[dict], settings: Settings) -> SuiteOutput:
    return evaluate(subject, records, settings)


register(Tasks())
