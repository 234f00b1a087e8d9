"""Grounded questions and the hallucination suite: abstention classes, judging, generation, the task op, scoring."""

from __future__ import annotations

import json
import random

import pytest

from itjax.data import grounded, tasks
from itjax.data.grounded import ABSTENTION, abstention_class, judge
from itjax.evals import hallucination
from itjax.evals.subject import Settings

SHEET = {"founded": "1932", "employees": "1200", "colour": "teal", "founder": "Marta Kolvey"}
PROMPT = ("Fact sheet:\n---\nCompany: Velmo Works\nFounded: 1932\nEmployees: 1200\nLogo colour: teal\n---\n"
          "Question: In what year was Velmo Works founded?")
YEAR = {"answerable": True, "answer": "1932", "question": "In what year was Velmo Works founded?"}
STAFF = {"answerable": True, "answer": "1200", "question": "How many people work at Velmo Works?"}
FOUNDER = {"answerable": True, "answer": "Marta Kolvey", "question": "Who founded Velmo Works?"}
COLOUR = {"answerable": True, "answer": "teal", "question": "What colour is the logo of Velmo Works?"}
NO_CAPTAIN = {"answerable": False, "answer": ABSTENTION, "question": "Who is the captain of the Orvanta?"}
NO_YEAR = {"answerable": False, "answer": ABSTENTION, "question": "In what year was Velmo Works founded?"}

JUDGED = [
    # Abstentions to unanswerable questions, in every class and several wordings.
    ("The sheet does not say.", NO_CAPTAIN, "abstained"),
    ("THE SHEET DOESN'T SAY", NO_CAPTAIN, "abstained"),
    ("the sheet doesnt mention who the captain is", NO_CAPTAIN, "abstained"),
    ("Not stated.", NO_CAPTAIN, "abstained"),
    ("This information is not provided in the fact sheet.", NO_CAPTAIN, "abstained"),
    ("There is no information about the captain of the Orvanta.", NO_CAPTAIN, "abstained"),
    ("The sheet doesn\u2019t list a captain for the Orvanta.", NO_CAPTAIN, "abstained"),
    ("The Orvanta's captain isn't listed.", NO_CAPTAIN, "abstained"),
    ("Sorry, the sheet does not specify this.", NO_CAPTAIN, "abstained"),
    ("Answer: not given", NO_CAPTAIN, "abstained"),
    ("N/A", NO_CAPTAIN, "abstained"),
    ("Unknown.", NO_CAPTAIN, "abstained"),
    ("I don't know.", NO_CAPTAIN, "abstained"),
    ("i dont know", NO_CAPTAIN, "abstained"),
    ("The captain is not known.", NO_CAPTAIN, "abstained"),
    ("I can't tell from the sheet.", NO_CAPTAIN, "abstained"),
    ("It Cannot Be Determined From The Sheet.", NO_CAPTAIN, "abstained"),
    ("I am unable to answer that.", NO_CAPTAIN, "abstained"),
    ("There is no way to tell.", NO_CAPTAIN, "abstained"),
    ("It's impossible to know.", NO_CAPTAIN, "abstained"),
    ("Not enough information.", NO_CAPTAIN, "abstained"),
    ("There is insufficient information to answer.", NO_CAPTAIN, "abstained"),
    ("The sheet does not say who the captain of the Orvanta is.", NO_CAPTAIN, "abstained"),
    ("Velmo Works: the founding year is not given.", NO_YEAR, "abstained"),
    # Values given to unanswerable questions, hedged or not.
    ("The captain is Elin Darrow.", NO_CAPTAIN, "fabricated"),
    ("Darrow", NO_CAPTAIN, "fabricated"),
    ("The sheet does not say, but it is probably 1950.", NO_YEAR, "fabricated"),
    ("I don't know, maybe 1950.", NO_YEAR, "fabricated"),
    ("Velmo Works was founded in 1950.", NO_YEAR, "fabricated"),
    ("Not stated. Probably Captain Elin Darrow.", NO_CAPTAIN, "fabricated"),
    ("The sheet does not mention it; I would guess teal.", NO_YEAR, "fabricated"),
    ("If the sheet does not say, say so.", NO_CAPTAIN, "fabricated"),  # an echoed instruction abstains from nothing
    ("Velmo Works.", NO_YEAR, "fabricated"),
    # Correct values, written differently.
    ("1932", YEAR, "correct"),
    ("Velmo Works was founded in 1932.", YEAR, "correct"),
    ("1,200", STAFF, "correct"),
    ("It has 1200 employees.", STAFF, "correct"),
    ("1,200 people work there!", STAFF, "correct"),
    ("marta kolvey", FOUNDER, "correct"),
    ("MARTA KOLVEY.", FOUNDER, "correct"),
    ("The founder was Marta Kolvey!", FOUNDER, "correct"),
    ("Teal.", COLOUR, "correct"),
    ("The sheet does not say, but I think it is 1932.", YEAR, "correct"),
    ("Velmo Works, founded in 1932, employs 1,200 people.", {**YEAR, "sheet": SHEET}, "correct"),
    ("1932\n1200\nteal", {**YEAR, "sheet": SHEET}, "wrong"),  # the sheet recited: which one answers?
    ('"Teal\n"1932\n"1200', {**YEAR, "question": PROMPT}, "wrong"),  # the sheet read from the prompt's block
    # Part of a multi-word value.
    ("Kolvey", FOUNDER, "partial"),
    ("Ms. Kolvey founded it.", FOUNDER, "partial"),
    ("Marta", FOUNDER, "partial"),
    # Other values.
    ("1950", YEAR, "wrong"),
    ("12000", STAFF, "wrong"),
    ("Elin Darrow", FOUNDER, "wrong"),
    ("Blue", COLOUR, "wrong"),
    ("The sheet does not say, but maybe 1950.", YEAR, "wrong"),
    ("Hello there.", YEAR, "wrong"),
    ("The sheet does not say it is teal.", COLOUR, "abstained"),  # the value inside the abstention is not stated
    # Abstentions to answerable questions.
    ("The sheet does not say.", YEAR, "abstained"),
    ("I cannot determine that.", FOUNDER, "abstained"),
    # Nothing.
    ("", YEAR, "empty"),
    ("   \n", NO_CAPTAIN, "empty"),
    ("...", FOUNDER, "empty"),
    (None, NO_CAPTAIN, "empty"),
]


def test_judge_labels_hand_written_responses():
  assert len(JUDGED) >= 40
  wrong = [(response, expected, judge(response, record)) for response, record, expected in JUDGED
           if judge(response, record) != expected]
  assert not wrong
  assert {label for _, _, label in JUDGED} == set(grounded.LABELS)


@pytest.mark.parametrize("text, expected", [
    ("The sheet does not mention it.", "not_stated"),
    ("Doesn't say.", "not_stated"),
    ("no information about that", "not_stated"),
    ("Not specified", "not_stated"),
    ("It isn't on the sheet.", "not_stated"),
    ("UNKNOWN", "unknown"),
    ("I dont know", "unknown"),
    ("That is not known.", "unknown"),
    ("can't tell", "cannot_tell"),
    ("CANNOT DETERMINE", "cannot_tell"),
    ("I'm unable to answer.", "cannot_tell"),
    ("impossible to know", "cannot_tell"),
    ("There is no way to tell!", "cannot_tell"),
    ("not enough information", "insufficient"),
    ("Insufficient information.", "insufficient"),
    ("The sheet doesn't contain enough info.", "insufficient"),
    ("1932", None),
    ("The founder is Marta Kolvey.", None),
    ("The sheet says so.", None),
    ("If the sheet does not say, say so.", None),
    ("", None),
])
def test_abstention_classes(text, expected):
  assert abstention_class(text) == expected


def test_unanswerable_attributes_are_never_on_the_sheet():
  questions = grounded.make_questions(1000, 3)
  unanswerable = [q for q in questions if not q["answerable"]]
  assert len(unanswerable) == 500
  for q in unanswerable:
    kind = grounded.KINDS[q["kind"]]
    block = q["prompt"].split("---")[1]
    lines = [line for line in block.splitlines() if line]
    assert q["attribute"] not in q["sheet"] and q["answer"] == ABSTENTION
    assert not any(line.startswith(kind.attributes[q["attribute"]].label + ":") for line in lines), q["prompt"]
    assert lines == [f"{kind.label}: {q['entity']}",
                     *(f"{kind.attributes[a].label}: {v}" for a, v in q["sheet"].items())]
  for q in questions:
    if q["answerable"]:
      assert q["answer"] == q["sheet"][q["attribute"]] and f": {q['answer']}\n" in q["prompt"]
    assert q["question"] in q["prompt"] and q["prompt"].count("---") == 2


def test_questions_are_seeded_and_half_unanswerable():
  dump = lambda records: json.dumps(records, sort_keys=True)  # noqa: E731
  assert dump(hallucination.load(40, 1)) == dump(hallucination.load(40, 1))
  assert dump(hallucination.load(40, 1)) != dump(hallucination.load(40, 2))
  for n in (0, 1, 7, 40):
    records = hallucination.load(n, 0)
    assert len(records) == n and sum(not r["answerable"] for r in records) == n // 2
  record = hallucination.load(4, 0)[0]
  assert [m["role"] for m in record["messages"]] == ["user"]
  assert {"answerable", "answer", "attribute", "question", "sheet"} <= set(record)
  with pytest.raises(ValueError, match="number of questions >= 0"):
    grounded.make_questions(-1, 0)


def test_grounded_qa_op_verifies_by_meaning():
  rng = random.Random(5)
  records = [tasks.make_task(rng, lambda types: types[0] == "grounded_qa") for _ in range(300)]
  assert tasks.TYPES["grounded_qa"] == "grounded"
  unanswerable = [r for r in records if r["verifier"]["answer"] == ABSTENTION]
  assert 100 < len(unanswerable) < 200
  for record in records:
    v = record["verifier"]
    assert v["layout"] is None
    assert tasks.verify(record["messages"][1]["content"], v), record
    case = str.upper if "uppercase" in v["modifiers"] else str.lower
    answer = tasks.render(case("It is probably 1950.") if v["answer"] == ABSTENTION else case("9" + v["answer"]),
                          None, v["modifiers"], "Answer", v["phrase"] or "")
    assert not tasks.verify(answer, v), answer
  plain = next(r["verifier"] for r in unanswerable if not r["verifier"]["modifiers"])
  assert tasks.verify("I don't know.", plain) and not tasks.verify("The sheet does not say, maybe 1950.", plain)


def test_grounded_is_held_out_by_default():
  assert "grounded_qa" in tasks.expand_holdout(tasks.DEFAULT_HOLDOUT)
  splits = tasks.make_splits(200, seed=2)
  assert not any("grounded_qa" in r["types"] for r in splits["train"] + splits["validation"])
  held = [r for r in splits["heldout"] if "grounded_qa" in r["types"]]
  assert all(tasks.verify(r["messages"][1]["content"], r["verifier"]) for r in held)


def _records(answerable: int, unanswerable: int) -> list[dict]:
  return [dict(YEAR) for _ in range(answerable)] + [dict(NO_YEAR) for _ in range(unanswerable)]


def test_score_computes_the_four_rates():
  records = _records(4, 5)
  responses = ["1932", "It was founded in 1932.", "The sheet does not say.", "1950",
               "Not stated.", "I don't know.", "1950", "Probably 1950.", ""]
  out = hallucination.score(records, responses)
  assert out.metrics == {"answerable_accuracy": 50.0, "abstention_rate": 40.0, "fabrication_rate": 40.0,
                         "false_abstention_rate": 25.0, "n_answerable": 4.0, "n_unanswerable": 5.0}
  assert out.bars == {k: out.metrics[k] for k in hallucination.RATES}
  assert [r["label"] for r in out.rows] == ["correct", "correct", "abstained", "wrong", "abstained", "abstained",
                                            "fabricated", "fabricated", "empty"]
  assert out.rows[3]["response"] == "1950" and out.rows[3]["answer"] == "1932" and out.note is None
  with pytest.raises(ValueError, match="one response per record"):
    hallucination.score(records, responses[:-1])


def test_score_leaves_out_rates_it_cannot_compute():
  only_answerable = hallucination.score(_records(2, 0), ["1932", "no idea"])
  assert only_answerable.metrics == {"answerable_accuracy": 50.0, "false_abstention_rate": 50.0,
                                     "n_answerable": 2.0, "n_unanswerable": 0.0}
  assert "unanswerable" in only_answerable.note
  only_unanswerable = hallucination.score(_records(0, 2), ["unknown", "1950"])
  assert set(only_unanswerable.bars) == {"abstention_rate", "fabrication_rate"}
  assert only_unanswerable.metrics["fabrication_rate"] == 50.0


class _Canned:
  """A stand-in subject that abstains on every chat and records what it was asked."""
  def __init__(self):
    self.asked = None

  def respond(self, chats, settings, desc):
    self.asked = (chats, desc)
    return [ABSTENTION] * len(chats), [1] * len(chats)


def test_evaluate_asks_the_subject_with_one_user_turn():
  records = hallucination.load(6, 0)
  subject = _Canned()
  out = hallucination.evaluate(subject, records, Settings(progress=False))
  chats, desc = subject.asked
  assert desc == "hallucination" and chats == [r["messages"] for r in records]
  assert out.metrics["abstention_rate"] == 100.0 and out.metrics["answerable_accuracy"] == 0.0
