"""The `hallucination` suite: questions about invented fact sheets (itjax.data.grounded), half of them unanswerable.

Every answer is labelled by `grounded.judge` (correct, partial, wrong, abstained, fabricated, empty) and the suite
reports, in percent:

  answerable_accuracy    answerable questions answered correctly
  abstention_rate        unanswerable questions met with an abstention
  fabrication_rate       unanswerable questions met with a value or a non-abstaining answer
  false_abstention_rate  answerable questions met with an abstention

plus n_answerable and n_unanswerable. A set without answerable (or unanswerable) questions leaves out the rates it
cannot compute, and its note says so.
"""

from __future__ import annotations

from itjax.data import grounded
from itjax.errors import UserError
from itjax.evals import non_answer
from itjax.evals.registry import register
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Sources, Suite

N_QUESTIONS = 200
_ANSWERABLE_RATES = {"answerable_accuracy": "correct", "false_abstention_rate": "abstained"}
_UNANSWERABLE_RATES = {"abstention_rate": "abstained", "fabrication_rate": "fabricated"}
RATES = ("answerable_accuracy", "abstention_rate", "fabrication_rate", "false_abstention_rate")


def load(n: int = N_QUESTIONS, seed: int = 0) -> list[dict]:
  """n generated question records (n // 2 unanswerable), each with its prompt as one user turn in `messages`."""
  records = []
  for question in grounded.make_questions(n, seed):
    prompt = question.pop("prompt")
    records.append({"messages": [{"role": "user", "content": prompt}], **question})
  return records


def _percent(labels: list[str], label: str) -> float:
  return 100.0 * sum(x == label for x in labels) / len(labels)


def score(records: list[dict], responses: list[str]) -> SuiteOutput:
  """The four rates (those the records allow) and counts; rows repeat each record with its response and label."""
  if len(records) != len(responses):
    raise UserError(f"expected one response per record: {len(records)} records, {len(responses)} responses")
  labels = [grounded.judge(response, record) for record, response in zip(records, responses)]
  answerable = [label for record, label in zip(records, labels) if record["answerable"]]
  unanswerable = [label for record, label in zip(records, labels) if not record["answerable"]]
  rates = {}
  for group, wanted in ((answerable, _ANSWERABLE_RATES), (unanswerable, _UNANSWERABLE_RATES)):
    if group:
      rates.update({metric: _percent(group, label) for metric, label in wanted.items()})
  rates = {metric: rates[metric] for metric in RATES if metric in rates}
  metrics = {**rates, "n_answerable": float(len(answerable)), "n_unanswerable": float(len(unanswerable))}
  missing = [kind for kind, group in (("answerable", answerable), ("unanswerable", unanswerable)) if not group]
  note = f"no {' or '.join(missing)} questions: their rates are left out" if missing else None
  rows = [{**record, "response": response, "label": label}
          for record, response, label in zip(records, responses, labels)]
  return SuiteOutput(metrics, rows, dict(rates), note)


def evaluate(subject: Subject, records: list[dict], settings: Settings) -> SuiteOutput:
  chats = [[m for m in record["messages"] if m["role"] == "user"] for record in records]
  responses, _ = subject.respond(chats, settings, "hallucination")
  return score(records, responses)


class Hallucination(Suite):
  name, unit = "hallucination", "rate (%)"

  def read(self, sources: Sources) -> list[dict]:
    """sources.subset generated questions (N_QUESTIONS when None), drawn with sources.seed."""
    return load(sources.subset or N_QUESTIONS, sources.seed)

  def evaluate(self, subjects: dict[str, Subject], records: list[dict], settings: Settings) -> dict[str, SuiteOutput]:
    outputs = super().evaluate(subjects, records, settings)
    non_answer.add_non_answers(outputs, lambda row: row["messages"][-1]["content"])
    return outputs

  def answer(self, subject: Subject, records: list[dict], settings: Settings) -> SuiteOutput:
    return evaluate(subject, records, settings)


register(Hallucination())
