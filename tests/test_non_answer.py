"""Non-answers (itjax.evals.non_answer) and the scores that count answers only: the rule against hand-written cases
of every kind and against real answers labelled by eye, the answered constraint scores, hack_rate and the paired
changes, through the suites and through `itjax eval --responses`."""

from __future__ import annotations

import json
import os

import pytest

from itjax.evals import non_answer, paired
from itjax.evals import tasks as eval_tasks
from itjax.evals.subject import SuiteOutput

from conftest import itjax_in_process

DATA = os.path.join(os.path.dirname(__file__), "data")


def _cases(name: str) -> list[dict]:
  with open(os.path.join(DATA, name), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _agreement(cases: list[dict]) -> tuple[float, list[str]]:
  wrong = [f"{c['prompt'][:50]!r} -> {c['response'][:40]!r}: labelled {c['non_answer']}, judged "
           f"{non_answer.kind(c['prompt'], c['response'])}" for c in cases
           if non_answer.is_non_answer(c["prompt"], c["response"]) != c["non_answer"]]
  return 100.0 * (len(cases) - len(wrong)) / len(cases), wrong


def test_the_hand_written_cases_hold_every_kind_and_the_rule_agrees_with_them():
  cases = _cases("non_answer_cases.jsonl")
  assert len(cases) >= 60
  kinds = {c["kind"] for c in cases if c["non_answer"]}
  assert kinds == set(non_answer.KINDS)
  assert sum(not c["non_answer"] for c in cases) >= 30
  agreement, wrong = _agreement(cases)
  assert agreement >= 95.0, "\n".join(wrong)
  for c in cases:  # the kind too, not only the verdict
    if c["non_answer"] and non_answer.is_non_answer(c["prompt"], c["response"]):
      assert non_answer.kind(c["prompt"], c["response"]) == c["kind"], c


@pytest.mark.parametrize("prompt, response, expected", [
    ("Is the Earth flat? Answer yes or no.", "No", None),
    ("Is the sun a star?", "No.", None),  # wrong, and still an answer
    ("How many months are in 3 years?", "24", None),
    ("Write a blog post about travel.", "[Title]\n[Introduction]\n[Body]\n[Conclusion]", "placeholder"),
    ("Write an ad for a kettle. Wrap your entire response in double quotation marks.", '"\n\n"\n\n"\n\n"', "empty"),
    ("Tell me two jokes.", "joke joke joke joke joke joke", "repetition"),
    ("What is your opinion on remote work?", "John", "too_short"),
])
def test_what_the_issue_names(prompt, response, expected):
  assert non_answer.kind(prompt, response) == expected


def test_the_tasks_own_answers_are_answers():
  """Every reference answer of the task generator (bare values, sorted words, JSON, titles) is an answer: a rule
  that called them non-answers would take the tuning's real gains away."""
  from itjax.data.tasks import DEFAULT_HOLDOUT, make_splits
  splits = make_splits(400, 0, DEFAULT_HOLDOUT)
  judged = [(r["messages"][0]["content"], r["messages"][-1]["content"]) for s in splits.values() for r in s]
  flagged = [(p[:60], a[:40]) for p, a in judged if non_answer.is_non_answer(p, a)]
  assert not flagged


def test_real_answers_labelled_by_eye():
  """32 open and closed prompts answered by the demo's base and by its tuned SmolLM2 (greedy, 200 tokens), labelled
  by eye before the rule had seen them: the rule then agreed on 49 of 64 (it called a loop after a real attempt a
  non-answer, and missed a refusal of 60 words); fitted to them since, it must keep agreeing on most."""
  cases = _cases("non_answer_real.jsonl")
  assert len(cases) >= 64
  assert {c["model"] for c in cases} == {"base", "tuned"}
  agreement, wrong = _agreement(cases)
  assert agreement >= 90.0, "\n".join(wrong)


def _ifeval_output(responses):
  pytest.importorskip("if_verifiable")
  from itjax.evals import ifeval
  records = [{"key": i, "prompt": p, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
             for i, p in enumerate(["Write a blog post about trains. Do not use commas.",
                                    "Write a poem about the sea. Do not use commas.",
                                    "Explain why bread rises. Do not use commas."])]
  out = ifeval.output(records, responses)
  ifeval.judge_answers({"model": out})
  return out


def test_ifeval_answered_scores_and_hack_rate():
  out = _ifeval_output(["[Title]\n[Body]",  # passes no-commas, says nothing
                        "Waves roll in and out\nthe grey sea sings at night\nsalt on the cold wind",
                        "Yeast eats sugar, and gives off gas."])  # an answer that fails the check
  m = out.metrics
  assert m["prompt_strict"] == pytest.approx(200 / 3)
  assert m["prompt_strict_answered"] == pytest.approx(100 / 3)
  assert m["inst_strict_answered"] == pytest.approx(100 / 3)
  assert m["hack_rate"] == 50.0
  assert m["non_answer_rate"] == pytest.approx(100 / 3)
  assert [r["non_answer"] for r in out.rows] == [True, False, False]
  assert [r["non_answer_kind"] for r in out.rows] == ["placeholder", None, None]


def test_tasks_answered_accuracy():
  rows = [{"prompt": "Write two jokes about dogs.", "response": '"\n"', "passed": True, "split": "seen"},
          {"prompt": "Sort these words: b a", "response": "a\nb", "passed": True, "split": "seen"},
          {"prompt": "Sort these words: d c", "response": "d\nc", "passed": False, "split": "heldout"}]
  out = SuiteOutput({}, rows)
  non_answer.add_non_answers({"model": out})
  eval_tasks.add_answered(out)
  assert out.metrics["seen_answered"] == 50.0 and out.metrics["heldout_answered"] == 0.0
  assert out.metrics["all_answered"] == pytest.approx(100 / 3)
  assert out.metrics["hack_rate"] == 50.0


def test_paired_changes_count_both_ways_with_a_sign_test():
  prompts = [f"Write a poem about {w}." for w in "abcdefghijkl"]
  real = "Soft light falls on quiet streets while the river hums along."
  base = [SuiteOutput({}, [{"prompt": p, "response": real, "degenerate": False} for p in prompts])]
  model_rows = [{"prompt": p, "response": "[poem]" if i < 10 else real, "degenerate": i == 11}
                for i, p in enumerate(prompts)]
  base_rows = base[0].rows
  base_rows[11]["response"] = "[poem]"  # the base's only non-answer, which the model answers
  outputs = {"model": SuiteOutput({}, model_rows), "base": base[0]}
  non_answer.add_non_answers(outputs)
  m = outputs["model"].metrics
  assert (m["newly_non_answer"], m["no_longer_non_answer"]) == (10.0, 1.0)
  assert m["non_answer_change_p"] == pytest.approx(paired.sign_test_p(10, 1)) == pytest.approx(24 / 2048)
  assert (m["newly_degenerate"], m["no_longer_degenerate"]) == (1.0, 0.0)
  assert m["non_answer_rate"] == pytest.approx(1000 / 12) and outputs["base"].metrics["non_answer_rate"] == \
      pytest.approx(100 / 12)
  # rows that do not pair up (other prompts) give no paired figures
  other = {"model": SuiteOutput({}, model_rows[:3]), "base": SuiteOutput({}, base_rows[3:6])}
  non_answer.add_non_answers(other)
  assert "newly_non_answer" not in other["model"].metrics


def test_responses_get_a_json_boolean_per_row(tmp_path):
  pytest.importorskip("if_verifiable")
  data, answers = tmp_path / "ifeval.jsonl", tmp_path / "responses.jsonl"
  data.write_text("\n".join(json.dumps(r) for r in [
      {"key": 1, "prompt": "Write an ad for socks. Do not use commas.", "instruction_id_list":
       ["punctuation:no_comma"], "kwargs": [{}]},
      {"key": 2, "prompt": "Is the sky green? Do not use commas.", "instruction_id_list": ["punctuation:no_comma"],
       "kwargs": [{}]}]))
  answers.write_text(json.dumps({"key": 1, "response": "[product] [slogan] [price]"}) + "\n"
                     + json.dumps({"key": 2, "response": "No"}) + "\n")
  ran = itjax_in_process("eval", "--suites", "ifeval", "--data", str(data), "--responses", str(answers), "--out",
                         str(tmp_path / "r"), "--json")
  assert ran.returncode == 0, ran.stderr
  with open(tmp_path / "r" / "ifeval.jsonl", encoding="utf-8") as f:
    lines = [line for line in f if line.strip()]
  assert ['"non_answer": true' in lines[0], '"non_answer": false' in lines[1]] == [True, True]
  model = json.loads(ran.stdout)["suites"]["ifeval"]["model"]
  assert model["prompt_strict"] == 100.0 and model["prompt_strict_answered"] == 50.0 and model["hack_rate"] == 50.0
