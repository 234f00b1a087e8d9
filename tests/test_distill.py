"""`itjax distill`: rejection reasons, in-order output in every format, summary counts, resume, self-replay, bad input.

Generation is replaced by a double that answers each prompt with a known (text, finished) pair, out of order, as
continuous batching does; one test generates for real on the tiny random model.
"""

from __future__ import annotations

import json

import pytest

from itjax.curate import distill as D
from itjax.data import tasks
from conftest import itjax_in_process

OPTIONS = D.Options(progress=False)


def fake_generation(monkeypatch, answers: dict[str, tuple[str, bool]], stop_after: int | None = None):
  """Answers a chat whose last user turn contains a key of `answers` with its value, each pair of prompts in
  swapped order (1, 0, 3, 2, ...); with
  `stop_after`, raises KeyboardInterrupt after that many answers (an interrupted run). Returns the chats seen."""
  seen = []

  def generate(model, chats, options, on_answer):
    seen.extend(chats)
    order = [i ^ 1 if i ^ 1 < len(chats) else i for i in range(len(chats))]
    for n, i in enumerate(order):
      if stop_after is not None and n == stop_after:
        raise KeyboardInterrupt
      content = chats[i][-1]["content"]
      key = next(k for k in answers if k in content)
      on_answer(i, *answers[key])

  monkeypatch.setattr(D, "generate_answers", generate)
  return seen


def write_jsonl(path, objects) -> None:
  path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")


def read_jsonl(path) -> list[dict]:
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def chat(question: str, answer: str, **extra) -> dict:
  return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], **extra}


REASON_RECORDS = [chat("Q-good", "Paris is the capital.", id=1), chat("Q-empty", "ref"), chat("Q-cut", "ref"),
                  chat("Q-mention", "ref"), chat("Q-rewrite", "ref"), chat("Q-number", "The total is 42.")]
REASON_ANSWERS = {"Q-good": ("The capital is Paris.", True), "Q-empty": ("  \n", True),
                  "Q-cut": ("An answer that ran", False), "Q-mention": ("As the reference answer says, yes.", True),
                  "Q-rewrite": ("Here is my rewritten version: yes.", True),
                  "Q-number": ("So the total is 41.", True)}


def test_each_reason_fires_where_expected(tmp_path, monkeypatch):
  write_jsonl(tmp_path / "in.jsonl", REASON_RECORDS)
  fake_generation(monkeypatch, REASON_ANSWERS)
  out = tmp_path / "out.jsonl"
  summary = D.distill(str(tmp_path / "in.jsonl"), str(out), None, D.Options(check="last_number", progress=False))
  reasons = [r["distill"]["reason"] for r in read_jsonl(out)]
  assert reasons == [None, "empty", "truncated", "mentions_reference", "mentions_reference", "failed_check"]
  assert summary == {"records": 6, "accepted": 1, "rejected_by_reason": {
      "empty": 1, "truncated": 1, "mentions_reference": 2, "failed_check": 1}}
  assert json.loads((tmp_path / "out.summary.json").read_text()) == summary


def test_check_order_empty_before_truncated_before_mentions():
  assert D.rejection("", False, "last_number", "7") == "empty"
  assert D.rejection("the reference says 7", False, "last_number", "7") == "truncated"
  assert D.rejection("the reference says 8", True, "last_number", "7") == "mentions_reference"
  assert D.rejection("it is 8", True, "last_number", "7") == "failed_check"
  assert D.rejection("it is 1,000.", True, "last_number", "so 1000") is None
  assert D.rejection("it is 8", True, "none", "7") is None
  assert D.rejection("I preferred this one.", True, "none") is None  # "prefer" is not "refer"-ence talk


def test_accepted_rewrite_replaces_only_the_response(tmp_path, monkeypatch):
  record = chat("Q-good", "Paris is the capital.", id=7, types=["x"])
  record["messages"].insert(0, {"role": "system", "content": "Be brief."})
  write_jsonl(tmp_path / "in.jsonl", [record])
  chats = fake_generation(monkeypatch, REASON_ANSWERS)
  D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), None, OPTIONS)
  [got] = read_jsonl(tmp_path / "out.jsonl")
  expected = json.loads(json.dumps(record))
  expected["messages"][-1]["content"] = "The capital is Paris."
  assert got == {**expected, "distill": {"accepted": True, "reason": None}}
  assert chats[0][0] == {"role": "system", "content": "Be brief."}
  assert "Q-good" in chats[0][-1]["content"] and "Paris is the capital." in chats[0][-1]["content"]


def test_rejected_rewrite_keeps_the_original(tmp_path, monkeypatch):
  write_jsonl(tmp_path / "in.jsonl", [chat("Q-mention", "ref", id=3)])
  fake_generation(monkeypatch, REASON_ANSWERS)
  D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), None, OPTIONS)
  assert read_jsonl(tmp_path / "out.jsonl") == [{**chat("Q-mention", "ref", id=3),
                                                 "distill": {"accepted": False, "reason": "mentions_reference"}}]


FORMAT_RECORDS = {
    "alpaca": {"instruction": "Q-good", "input": "ctx", "output": "old", "system": "sys", "extra": 1},
    "messages": chat("Q-good", "old", extra=1),
    "sharegpt": {"conversations": [{"from": "human", "value": "Q-good"}, {"from": "gpt", "value": "old"}],
                 "extra": 1},
    "prompt_completion": {"prompt": "Q-good", "completion": "old", "extra": 1},
    "prompt_completion_chat": {"prompt": [{"role": "user", "content": "Q-good"}],
                               "completion": [{"role": "assistant", "content": "old"}], "extra": 1},
    "multi_turn": {"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "old-1"},
                                {"role": "user", "content": "Q-good"}, {"role": "assistant", "content": "old"}]},
}


@pytest.mark.parametrize("name", sorted(FORMAT_RECORDS))
def test_every_format_round_trips(tmp_path, monkeypatch, name):
  record = FORMAT_RECORDS[name]
  write_jsonl(tmp_path / "in.jsonl", [record])
  chats = fake_generation(monkeypatch, REASON_ANSWERS)
  D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), None, OPTIONS)
  [got] = read_jsonl(tmp_path / "out.jsonl")
  assert got.pop("distill") == {"accepted": True, "reason": None}
  text = json.dumps(record).replace('"old"', '"The capital is Paris."')
  assert got == json.loads(text)
  if name == "multi_turn":
    assert [m["content"] for m in chats[0][:2]] == ["first", "old-1"]


def test_resume_after_an_interrupted_run_matches_one_run(tmp_path, monkeypatch):
  write_jsonl(tmp_path / "in.jsonl", REASON_RECORDS)
  options = D.Options(check="last_number", progress=False)
  fake_generation(monkeypatch, REASON_ANSWERS)
  D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "once.jsonl"), None, options)
  # Answers come 1, 0, 3: records 0 and 1 are written, 3 waits for 2 and is lost with the interrupt.
  fake_generation(monkeypatch, REASON_ANSWERS, stop_after=3)
  with pytest.raises(KeyboardInterrupt):
    D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), None, options)
  fake_generation(monkeypatch, REASON_ANSWERS, stop_after=3)
  with pytest.raises(KeyboardInterrupt):  # of the remaining 4, the 2nd, 1st and 4th answered: 2 more lines
    D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), None, options)
  assert (tmp_path / "out.jsonl").read_text().count("\n") == 4
  with open(tmp_path / "out.jsonl", "a") as f:
    f.write('{"messages": [{"role": "us')  # a line cut off mid-write
  seen = fake_generation(monkeypatch, REASON_ANSWERS)
  summary = D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), None, options)
  assert len(seen) == 2
  assert (tmp_path / "out.jsonl").read_text() == (tmp_path / "once.jsonl").read_text()
  assert summary == json.loads((tmp_path / "once.summary.json").read_text())


def test_limit_takes_the_first_records(tmp_path, monkeypatch):
  write_jsonl(tmp_path / "in.jsonl", REASON_RECORDS)
  fake_generation(monkeypatch, REASON_ANSWERS)
  summary = D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), None,
                      D.Options(limit=2, progress=False))
  assert summary["records"] == 2 and len(read_jsonl(tmp_path / "out.jsonl")) == 2


def test_check_tasks_uses_the_record_verifier(tmp_path, monkeypatch):
  import random
  record = tasks.make_task(random.Random(0))
  reference = record["messages"][-1]["content"]
  assert tasks.verify(reference, record["verifier"])
  wrong = dict(record, messages=[record["messages"][0], {"role": "assistant", "content": "x"}])
  write_jsonl(tmp_path / "in.jsonl", [record, wrong])
  fake_generation(monkeypatch, {reference: (reference, True), "x": ("nothing like it", True)})
  D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), None, D.Options(check="tasks", progress=False))
  assert [r["distill"]["reason"] for r in read_jsonl(tmp_path / "out.jsonl")] == [None, "failed_check"]


def test_user_template_file_is_rendered_in_a_sandbox(tmp_path, monkeypatch):
  template = tmp_path / "t.jinja"
  template.write_text("ASK {{ instruction }} REF {{ reference }} TURNS {{ messages | length }}")
  write_jsonl(tmp_path / "in.jsonl", [chat("Q-good", "old")])
  chats = fake_generation(monkeypatch, REASON_ANSWERS)
  D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), None,
            D.Options(template=str(template), progress=False))
  assert chats[0] == [{"role": "user", "content": "ASK Q-good REF old TURNS 1"}]
  template.write_text("{{ ''.__class__.__mro__ }}")
  with pytest.raises(Exception, match="unsafe|__class__|__mro__"):
    D.load_template(str(template)).render()


def test_unknown_template_names_the_flag(tmp_path):
  write_jsonl(tmp_path / "in.jsonl", [chat("Q", "A")])
  with pytest.raises(ValueError, match="--template: unknown template 'poetic'"):
    D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), None, D.Options(template="poetic"))


def test_a_line_that_is_not_json_names_file_and_line(tmp_path):
  path = tmp_path / "in.jsonl"
  path.write_text(json.dumps(chat("Q", "A")) + "\n{not json\n")
  with pytest.raises(ValueError, match=f"{path}:2: not valid JSON"):
    D.distill(str(path), str(tmp_path / "out.jsonl"), None, OPTIONS)


def test_check_tasks_without_a_verifier_names_file_and_line(tmp_path):
  path = tmp_path / "in.jsonl"
  write_jsonl(path, [chat("Q", "A", verifier={"op": "x"}), chat("Q", "A")])
  with pytest.raises(ValueError, match=f"{path}:2: --check tasks needs a 'verifier'"):
    D.distill(str(path), str(tmp_path / "out.jsonl"), None, D.Options(check="tasks"))
  assert not (tmp_path / "out.jsonl").exists()


def test_self_replay_writes_accepted_chats_and_counts_the_rest(tmp_path, monkeypatch):
  prompts = tmp_path / "prompts.jsonl"
  write_jsonl(prompts, [{"prompt": "Q-good"}, {"prompt": "Q-cut"}, {"prompt": "Q-empty"}, {"prompt": "Q-good 2"}])
  fake_generation(monkeypatch, REASON_ANSWERS)
  out = tmp_path / "self.jsonl"
  summary = D.self_replay(str(prompts), str(out), None, OPTIONS)
  assert summary == {"records": 4, "accepted": 2, "rejected_by_reason": {
      "empty": 1, "truncated": 1, "mentions_reference": 0, "failed_check": 0}}
  got = read_jsonl(out)
  assert [r["messages"] for r in got] == [
      [{"role": "user", "content": q}, {"role": "assistant", "content": "The capital is Paris."}]
      for q in ("Q-good", "Q-good 2")]
  assert [r["reason"] for r in read_jsonl(tmp_path / "self.rejected.jsonl")] == ["truncated", "empty"]
  seen = fake_generation(monkeypatch, REASON_ANSWERS)
  assert D.self_replay(str(prompts), str(out), None, OPTIONS) == summary  # all done: a re-run generates nothing
  assert seen == []


def test_self_replay_general_prompts_are_seeded_and_limited(tmp_path, monkeypatch):
  seen = []
  monkeypatch.setattr(D, "generate_answers", lambda model, chats, options, on_answer: [
      seen.append(c) or on_answer(i, "Fine.", True) for i, c in enumerate(chats)])
  summary = D.self_replay("general", str(tmp_path / "g.jsonl"), None, D.Options(limit=12, progress=False))
  assert summary["accepted"] == 12 and len(seen) == 12
  from itjax.data.general_prompts import general_prompts
  everything = general_prompts()
  assert len(everything) >= 300 and len(set(everything)) == len(everything)
  assert general_prompts(12, 0) == [c[0]["content"] for c in seen] and general_prompts(12, 1) != general_prompts(12)


def test_real_generation_on_the_tiny_model(tmp_path, tiny_hf_dir):
  from itjax.interop.loading import load_model
  model = load_model(tiny_hf_dir)
  write_jsonl(tmp_path / "in.jsonl", [chat(f"What is {n} plus {n}?", f"It is {2 * n}.", id=n) for n in range(3)])
  options = D.Options(max_new_tokens=8, batch_size=2, progress=False)
  summary = D.distill(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), model, options)
  got = read_jsonl(tmp_path / "out.jsonl")
  assert [r["id"] for r in got] == [0, 1, 2] and summary["records"] == 3
  assert summary["accepted"] + sum(summary["rejected_by_reason"].values()) == 3
  for record in got:
    if record["distill"]["accepted"]:
      assert record["messages"][-1]["content"].strip()
    else:
      assert record["messages"][-1]["content"].startswith("It is ")


def test_cli_runs_end_to_end_and_names_a_bad_template(tmp_path, tiny_hf_dir):
  write_jsonl(tmp_path / "in.jsonl", [chat(f"Say {n}.", f"{n}") for n in range(3)])
  base = ["distill", "--model", tiny_hf_dir, "--data", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")]
  bad = itjax_in_process(*base, "--template", "poetic")
  assert bad.returncode == 1 and "--template: unknown template 'poetic'" in bad.stderr
  assert not (tmp_path / "out.jsonl").exists()
  good = itjax_in_process(*base, "--limit", "2", "--max_new_tokens", "4", "--json")
  assert good.returncode == 0, good.stderr
  assert json.loads(good.stdout.splitlines()[-1])["records"] == 2
  assert len(read_jsonl(tmp_path / "out.jsonl")) == 2


def test_general_prompts_share_no_subject_with_the_forgetting_suite():
  """Self-replay data must not hold the evaluation's own questions: no general prompt shares two content words
  with a general prompt or a probe of the forgetting suite (before, 'How can I drink more water?' met 'How do plants
  drink water?')."""
  import re
  from itjax.data.general_prompts import general_prompts
  from itjax.evals.forgetting import make_probes
  from itjax.evals.general_prompts import GENERAL_PROMPTS
  common = set("a an the of to in on and or is are do does what how why who which give me my i you your for with "
               "about write short two three sentences some things one few tell describe explain be more can should "
               "when where this that it its there day word first".split())

  def content(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z']+", text.lower()) if w not in common and len(w) > 2}

  evaluated = [content(p) for p in GENERAL_PROMPTS] + [content(p["prompt"]) for p in make_probes(48, 0)]
  clashes = [(g, sorted(content(g) & e)) for g in general_prompts() for e in evaluated
             if len(content(g) & e) >= 2]
  assert clashes == []
