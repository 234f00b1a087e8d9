"""Verifiable instruction tasks: coverage, self-consistency, constraint violations, determinism, holdout, files."""

import copy
import json
import random
from collections import Counter

import pytest

from itjax.data import tasks
from itjax.data.verify import LAYOUTS


def draw(seed, n, allowed=None):
  rng = random.Random(seed)
  return [tasks.make_task(rng, allowed) for _ in range(n)]


@pytest.fixture(scope="module")
def records():
  return draw(0, 3000)


def response(record):
  return record["messages"][1]["content"]


def rerender(record, answer=None, layout="same", mods=None, title=None):
  """The record's response rebuilt with some parts changed."""
  v = record["verifier"]
  return tasks.render(v["answer"] if answer is None else answer, v["layout"] if layout == "same" else layout,
                      v["modifiers"] if mods is None else mods, title or tasks.OPS[v["op"]].title, v["phrase"] or "")


def without(verifier, constraint):
  """The verifier kwargs with one constraint dropped."""
  v = copy.deepcopy(verifier)
  if constraint in LAYOUTS:
    v.update(layout=None, n=None, keys=None)
  else:
    v["modifiers"].remove(constraint)
  return v


def test_types_groups_and_coverage(records):
  assert len(tasks.TYPES) >= 16
  groups = set(tasks.TYPES.values())
  assert {"order", "count", "math", "text", "case", "structure", "wrap", "punctuation"} <= groups
  for group in groups - {"grounded"}:  # grounded questions are one op, held out or trained on as a whole
    assert sum(g == group for g in tasks.TYPES.values()) >= 2, group
  assert not groups & set(tasks.TYPES)  # a name is a type or a group, never both
  seen = {t for r in records for t in r["types"]}
  assert seen == set(tasks.TYPES)
  sizes = [len(r["types"]) - 1 for r in records]
  assert set(sizes) == {0, 1, 2, 3} and sum(s >= 2 for s in sizes) > len(records) // 5


def test_records_are_json_and_answers_have_no_commas(records):
  for record in records[:500]:
    assert json.loads(json.dumps(record)) == record
    assert list(record) == ["messages", "types", "verifier", "prompt_parts"]
    assert tasks.join_prompt(record["prompt_parts"]) == record["messages"][0]["content"]
    assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
    answer = record["verifier"]["answer"]
    assert "," not in "".join(map(str, answer if isinstance(answer, list) else [answer]))


def test_generated_responses_pass_their_verifier():
  for seed in range(5):
    for record in draw(seed, 1000):
      assert tasks.verify(response(record), record["verifier"]), record


def test_verifier_accepts_other_wordings():
  v = {"op": "sort_words", "answer": ["apple", "pear"], "layout": "bullets", "modifiers": ["title", "end_phrase"],
       "n": 2, "phrase": "Hope this helps.", "keys": None}
  assert tasks.verify("  <<Fruit>>\n- apple\n-   pear  \nHope this helps.\n", v)
  assert not tasks.verify("<<Fruit>>\n- apple\n- pear\n- plum\nHope this helps.", v)
  v = {"op": "acronym", "answer": "EMLOP", "layout": "json", "modifiers": ["lowercase"], "n": None, "phrase": None,
       "keys": ["answer"]}
  assert tasks.verify('\n{ "answer" : "emlop" }\n', v)
  assert not tasks.verify('{"answer": "emlop", "extra": 1}', v)
  assert not tasks.verify('{"answer": "EMLOP"}', v)


def _drop_last_bullet(text):
  lines = text.splitlines()
  last = max(i for i, line in enumerate(lines) if line.lstrip('"').startswith("* "))
  return "\n".join(lines[:last] + lines[last + 1:])


CRUDE = {  # constraint -> a violating edit of a response that satisfies it
    "lowercase": str.upper,
    "uppercase": str.lower,
    "title": lambda text: text.split("\n", 1)[1],
    "end_phrase": lambda text: text.rstrip('"').rsplit("\n", 1)[0],
    "no_commas": lambda text: text.replace("\n", ",\n", 1) if "\n" in text else text + ",",
    "quotes": lambda text: text[:-1],
    "bullets": _drop_last_bullet,
    "numbered": lambda text: text.replace("1. ", "3. ", 1),
    "paragraphs": lambda text: text.replace("***", "", 1),
    "json": lambda text: text[:-1],
}


@pytest.mark.parametrize("constraint", sorted(CRUDE))
def test_each_constraint_rejects_a_violation(records, constraint):
  with_it = [r for r in records if constraint in r["types"]]
  assert len(with_it) >= 20
  targeted = 0
  for record in with_it:
    v = record["verifier"]
    mutated = CRUDE[constraint](response(record))
    if mutated != response(record):
      assert not tasks.verify(mutated, v), (constraint, mutated)
    # A response that keeps everything else but breaks this constraint: only this constraint's check rejects it.
    if constraint in LAYOUTS:
      broken = rerender(record, layout=None)
    elif constraint == "no_commas":
      broken = rerender(record, title="Words, numbers and more") if "title" in v["modifiers"] else response(record)
    else:
      broken = rerender(record, mods=[m for m in v["modifiers"] if m != constraint])
    if broken != response(record):
      targeted += 1
      assert not tasks.verify(broken, v), (constraint, broken)
      assert tasks.verify(broken, without(v, constraint)), (constraint, broken)
  assert targeted >= 5, constraint


def _wrong(answer):
  if isinstance(answer, list):
    last = answer[-1]
    return answer[:-1] + [last + 1 if isinstance(last, int) else last + "s"]
  return answer + 1 if isinstance(answer, int) else answer[:-1] + ("0" if answer[-1] != "0" else "1")


@pytest.mark.parametrize("kind", [list, int, str])
def test_wrong_answers_are_rejected(records, kind):
  chosen = [r for r in records if isinstance(r["verifier"]["answer"], kind)]
  assert len(chosen) >= 100
  for record in chosen:
    assert not tasks.verify(rerender(record, answer=_wrong(record["verifier"]["answer"])), record["verifier"])
  if kind is list:  # the right items in the wrong order
    record = next(r for r in chosen if r["verifier"]["op"] == "sort_words")
    assert not tasks.verify(rerender(record, answer=record["verifier"]["answer"][::-1]), record["verifier"])


def test_malformed_responses_return_false(records):
  rng = random.Random(1)
  junk = ["", " ", '"', "<<>>", "***", "* ", "1.", "{", "[" * 5000, "1" * 5000, '{"items": [1.5]}',
          '{"answer": null}', '{"items": "x"}', "\x00\n\n", "9" * 20 + ". x"]
  for record in records[:600]:
    text = response(record)
    for candidate in junk + [text[:rng.randrange(len(text) + 1)], text[::-1]]:
      assert tasks.verify(candidate, record["verifier"]) in (True, False)
    assert tasks.verify(None, record["verifier"]) is False


def test_splits_are_deterministic():
  dump = lambda splits: json.dumps(splits, sort_keys=True)
  first = tasks.make_splits(300, seed=7)
  assert dump(first) == dump(tasks.make_splits(300, seed=7))
  assert dump(first) != dump(tasks.make_splits(300, seed=8))
  assert {k: len(v) for k, v in first.items()} == {"train": 300, "validation": 30, "heldout": 30}
  prompts = [r["messages"][0]["content"] for split in first.values() for r in split]
  assert len(prompts) == len(set(prompts))


@pytest.mark.parametrize("holdout", [tasks.DEFAULT_HOLDOUT, "case,sort_words", ["json", "math"]])
def test_holdout_types_stay_out_of_training(holdout):
  held = tasks.expand_holdout(holdout)
  splits = tasks.make_splits(400, seed=3, holdout=holdout, validation_fraction=0.25)
  assert len(splits["heldout"]) == 100
  for record in splits["train"] + splits["validation"]:
    assert held.isdisjoint(record["types"])
  for record in splits["heldout"]:
    assert held.intersection(record["types"]) and not held.issuperset(record["types"])
    assert tasks.verify(response(record), record["verifier"])


def test_expand_holdout():
  assert tasks.expand_holdout(tasks.DEFAULT_HOLDOUT) == {"max_number", "numbered", "uppercase", "grounded_qa"}
  assert tasks.expand_holdout("case") == {"lowercase", "uppercase"}
  assert tasks.expand_holdout(" math , json ") == {t for t, g in tasks.TYPES.items() if g == "math"} | {"json"}
  assert tasks.expand_holdout(["quotes"]) == {"quotes"} and tasks.expand_holdout("") == set()
  with pytest.raises(ValueError, match=r"'no_such_type'.*known types: .*sort_words.*known groups: .*case"):
    tasks.expand_holdout("case,no_such_type")


def test_write_splits(tmp_path):
  out = tmp_path / "made" / "tasks"
  paths = tasks.write_splits(str(out), n=40, seed=5, holdout="title")
  assert sorted(paths) == ["heldout", "train", "validation"]
  sizes = {"train": 40, "validation": 4, "heldout": 4}
  for split, path in paths.items():
    lines = open(path, encoding="utf-8").read().splitlines()
    assert len(lines) == sizes[split]
    for line in lines:
      record = json.loads(line)
      assert list(record) == ["messages", "types", "verifier", "prompt_parts"]
      assert tasks.verify(record["messages"][1]["content"], record["verifier"])
  summary = json.loads((out / "tasks.json").read_text())
  assert summary["seed"] == 5 and summary["n"] == 40 and summary["holdout"] == ["title"]
  assert summary["phrasings"] == "one"
  assert summary["counts"]["heldout"]["title"] == 4 and "title" not in summary["counts"]["train"]


def test_the_suites_verdicts_give_back_its_figures():
  """Per-example verdicts of the tasks suite: right and wrong answers, a pass by a non-answer (a hack), both splits."""
  from conftest import assert_verdicts_reproduce
  from itjax.evals import non_answer
  from itjax.evals import tasks as eval_tasks
  splits = tasks.make_splits(40, 3)
  records = [{**r, "split": "seen"} for r in splits["validation"][:4]] + [
      {**r, "split": "heldout"} for r in splits["heldout"][:4]]
  responses = [r["messages"][1]["content"] if i % 3 else "wrong" for i, r in enumerate(records)]
  output = eval_tasks.score(records, responses)
  non_answer.add_non_answers({"model": output})
  output.rows[1]["non_answer"] = True  # a pass that says nothing
  eval_tasks.add_answered(output)
  output.metrics["non_answer_rate"] = 100.0 * sum(r["non_answer"] for r in output.rows) / len(output.rows)
  assert output.metrics["hack_rate"] > 0 and 0 < output.metrics["seen"] < 100
  assert_verdicts_reproduce(eval_tasks.Tasks(), output, {"seen", "heldout", "all", "seen_answered",
                                                         "heldout_answered", "hack_rate", "non_answer_rate"})
  assert any(k.startswith("type/") for k in output.rows[0]["scores"])


def test_task_name_format_and_eval_phrasings_change_only_what_they_say():
  """train_format='task_name': the same train records, prompts naming the types and giving the input, with no
  instruction sentence; eval_phrasings: the evaluation splits' wordings, independent of the train split's."""
  plain = tasks.make_splits(300, 5)
  named = tasks.make_splits(300, 5, train_format="task_name")
  assert named["validation"] == plain["validation"] and named["heldout"] == plain["heldout"]
  for a, b in zip(plain["train"], named["train"]):
    assert a["types"] == b["types"] and a["messages"][1] == b["messages"][1] and a["verifier"] == b["verifier"]
    prompt = b["messages"][0]["content"]
    assert prompt.startswith(f"task: {'+'.join(a['types'])}\n") and a["prompt_parts"]["input"] in prompt
    assert not any(s["text"] in prompt for s in a["prompt_parts"]["sentences"])
    assert tasks.verify(b["messages"][1]["content"], b["verifier"])
  phrase = next(b for b in named["train"] if b["verifier"]["phrase"])
  assert f"end_phrase: {phrase['verifier']['phrase']}" in phrase["messages"][0]["content"]
  varied = tasks.make_splits(300, 5, phrasings="one", eval_phrasings="all")
  assert varied["train"] == plain["train"]
  assert varied["validation"] == tasks.make_splits(300, 5, phrasings="all")["validation"] != plain["validation"]
  with pytest.raises(Exception, match="unknown task prompt format 'yaml'"):
    tasks.make_splits(10, 0, train_format="yaml")


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_noise_corrupts_exactly_its_share_and_every_noisy_record_fails_its_verifier(rate):
  """tasks.noise over 1,000 train records: exactly that share noisy, each rejected by its verifier, the kinds
  taking turns; the clean records, the prompts and the evaluation splits are the noiseless ones."""
  from itjax.data import noise
  clean = tasks.make_splits(1000, 4)
  noisy = tasks.make_splits(1000, 4, noise=rate)
  assert noisy["validation"] == clean["validation"] and noisy["heldout"] == clean["heldout"]
  marked = [r for r in noisy["train"] if "noise" in r]
  assert len(marked) == round(rate * 1000)
  counts = {k: sum(r["noise"] == k for r in marked) for k in noise.KINDS}
  assert all(abs(c - len(marked) / 3) < 0.1 * len(marked) for c in counts.values()), counts
  for a, b in zip(clean["train"], noisy["train"]):
    assert a["messages"][0] == b["messages"][0] and a["verifier"] == b["verifier"]
    assert tasks.verify(b["messages"][1]["content"], b["verifier"]) == ("noise" not in b)
    if "noise" not in b:
      assert b == a
  assert sum("noise" in r for r in tasks.make_splits(1000, 5, noise=rate)["train"]) == len(marked)
  only = tasks.make_splits(200, 4, noise=1.0, noise_kinds="truncated")["train"]
  assert {r["noise"] for r in only} <= {"truncated", "wrong_answer"}  # a one-character answer cannot be cut
  assert sum(r["noise"] == "truncated" for r in only) > 180
  for bad, message in ((dict(noise=1.5), r"noise rate must be in \[0, 1\], got 1.5"),
                       (dict(noise=0.1, noise_kinds="typos"), "unknown noise kind 'typos'; known: wrong_answer")):
    with pytest.raises(ValueError, match=message):
      tasks.make_splits(20, 0, **bad)


def test_each_noise_kind_changes_what_it_says():
  """wrong_answer keeps the layout and states another answer; broken_format states the answer in another layout
  or without a modifier; truncated is a prefix of the clean response."""
  from itjax.data import noise
  from itjax.data.verify import parse_body
  records = draw(3, 300)
  for i, record in enumerate(records):
    clean = response(record)
    for kind in noise.KINDS:
      out = noise.corrupt(record, kind, random.Random(i))
      text = response(out)
      assert out["noise"] in noise.KINDS and not tasks.verify(text, record["verifier"])
      if out["noise"] == "truncated":
        assert clean.startswith(text) and len(text) < len(clean)
      elif out["noise"] == "wrong_answer" and record["verifier"]["layout"] in ("bullets", "numbered", "json"):
        assert parse_body(_unwrapped(text, record), record["verifier"]) not in (None, parse_body(
            _unwrapped(clean, record), record["verifier"]))
      elif out["noise"] == "broken_format":
        assert text != clean


def _unwrapped(text, record):
  """The body of a response: quotes, end phrase and title taken off as the verifier does."""
  mods, v = set(record["verifier"]["modifiers"]), record["verifier"]
  text = text.strip()
  if "quotes" in mods:
    text = text[1:-1].strip()
  if "end_phrase" in mods:
    text = text[:-len(v["phrase"])].rstrip()
  if "title" in mods:
    text = text.partition("\n")[2].strip()
  return text


def test_config_and_make_tasks_take_the_noise_and_size_options(tmp_path):
  from conftest import itjax_in_process
  from itjax.training import config
  c = config.base_config()
  c.model, c.data.train = "demo", "train.jsonl"
  c.tasks.noise = 0.5
  config.validate(c)
  for key, value, message in (("noise", 1.2, r"config\.tasks\.noise must be a share in \[0, 1\], got 1.2"),
                              ("select", -1, r"config\.tasks\.select must be a number of records >= 0"),
                              ("select_by", "size", r"config\.tasks\.select_by must be random, quality or diversity"),
                              ("n_eval", -2, r"config\.tasks\.n_eval must be >= 0"),
                              ("grounded_unanswerable", 1.5, r"config\.tasks\.grounded_unanswerable must be a share"),
                              ("noise_kinds", "typos", r"config\.tasks\.noise_kinds: unknown noise kind 'typos'")):
    bad = config.base_config()
    bad.model, bad.data.train = "demo", "train.jsonl"
    bad.tasks[key] = value
    with pytest.raises(ValueError, match=message):
      config.validate(bad)
  out = tmp_path / "noisy"
  result = itjax_in_process("make-tasks", "--out", str(out), "--n", "40", "--noise", "0.25",
                            "--noise_kinds", "truncated,wrong_answer", "--n_eval", "7")
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / "tasks.json").read_text())
  assert summary["sizes"] == {"train": 40, "validation": 7, "heldout": 7}
  assert summary["noise"] == 0.25 and sum(summary["noisy"].values()) == 10
  assert set(summary["noisy"]) <= {"truncated", "wrong_answer"}


@pytest.mark.parametrize("by", ["random", "quality"])
def test_tasks_select_keeps_n_of_the_records_training_would_use_and_counts_the_noise_kept(tiny_hf_dir, tmp_path,
                                                                                         by):
  """tasks.select: N of the generated train records without data.drop_types' types, chosen as `itjax curate`
  chooses; train.jsonl also keeps the dropped types (left out at loading), train_all.jsonl the generated split;
  selection.json counts the noise kept; a second prepare keeps the first selection."""
  import os
  from test_train import load_config
  from itjax.training.prepare import prepare
  config = load_config(model=tiny_hf_dir, **{"tasks.n": 40, "tasks.noise": 0.5, "tasks.select": 12,
                                             "tasks.select_by": by, "data.drop_types": "arithmetic"})
  workdir = str(tmp_path / "run")
  prepare(config, workdir)
  folder = tmp_path / "run" / "tasks"
  read = lambda name: [json.loads(line) for line in (folder / name).read_text().splitlines()]  # noqa: E731
  generated, train, selected = read("train_all.jsonl"), read("train.jsonl"), read("selected.jsonl")
  assert generated == tasks.make_splits(40, 0, noise=0.5)["train"]
  dropped = [r for r in generated if "arithmetic" in r["types"]]
  summary = json.loads((folder / "selection.json").read_text())
  kept = summary["kept"]  # quality keeps fewer when fewer than 12 have IFD < 1, and says so
  assert kept == 12 if by == "random" else 0 < kept <= 12 and (kept == 12) != bool(summary["notes"])
  assert len(selected) == kept and not any("arithmetic" in r["types"] for r in selected) and dropped
  assert train == [r for r in generated if r in selected or r in dropped]  # input order
  removed = read("selected.removed.jsonl")
  assert len(removed) == 40 - kept and {r["reason"] for r in removed} == {"not_selected", "data.drop_types"}
  if by == "quality":
    assert all("ifd" in r for r in removed if r["reason"] == "not_selected")
  assert summary["candidates"] == 40 - len(dropped) and summary["by"] == by
  assert summary["kept_by_noise"] == dict(sorted(Counter(r.get("noise", "clean") for r in selected).items()))
  assert sum(summary["candidates_by_noise"].values()) == summary["candidates"]
  stamp = os.path.getmtime(folder / "train.jsonl")
  prepare(config, workdir)
  assert os.path.getmtime(folder / "train.jsonl") == stamp and read("train.jsonl") == train
  config.tasks.select = 1000
  with pytest.raises(ValueError, match=r"config\.tasks\.select: --select 1000: only \d+ records remain"):
    prepare(config, str(tmp_path / "other"))


def test_tasks_distill_rewrites_the_records_training_would_use_and_keeps_the_originals_it_rejects(
    tiny_hf_dir, tmp_path, monkeypatch):
  """tasks.distill: the base rewrites (itjax distill) the train records without data.drop_types' types, after
  tasks.select when both are set; a rewrite its verifier rejects keeps the original; distillation.json has the
  acceptance rate; a run stopped after the rewrite resumes to the same files."""
  from test_train import load_config
  from itjax.curate import distill as distill_lib
  from itjax.training.prepare import prepare
  shown = []

  def rewrite(model, chats, options, on_answer):  # every other reference as it stands (accepted), else "no idea"
    for i, chat in enumerate(chats):
      shown.append(chat)
      reference = chat[-1]["content"].split("known to be correct:\n\n", 1)[1].split("\n\nRefer to it", 1)[0]
      on_answer(i, reference + " " if i % 2 == 0 else "no idea", True)

  monkeypatch.setattr(distill_lib, "generate_answers", rewrite)
  config = load_config(model=tiny_hf_dir, **{"tasks.n": 40, "tasks.select": 10, "tasks.distill": "refer",
                                             "data.drop_types": "arithmetic"})
  workdir = str(tmp_path / "run")
  prepare(config, workdir)
  folder = tmp_path / "run" / "tasks"
  read = lambda name: [json.loads(line) for line in (folder / name).read_text().splitlines()]  # noqa: E731
  train, generated = read("train.jsonl"), read("train_all.jsonl")
  rewritten = [r for r in train if "distill" in r]
  assert len(rewritten) == len(shown) == 10 and not any("arithmetic" in r["types"] for r in rewritten)
  assert [r["distill"]["accepted"] for r in rewritten] == [True, False] * 5
  assert all(r["distill"]["reason"] == "failed_check" for r in rewritten[1::2])
  originals = {r["messages"][0]["content"]: r for r in generated}
  for r in rewritten:
    was = originals[r["messages"][0]["content"]]
    assert r["messages"][1]["content"] == was["messages"][1]["content"].strip()  # accepted: the rewrite, stripped
    assert tasks.verify(r["messages"][1]["content"], r["verifier"])
  assert [r for r in train if "distill" not in r] == [r for r in generated if "arithmetic" in r["types"]]
  summary = json.loads((folder / "distillation.json").read_text())
  assert summary["acceptance_rate"] == 50.0 and summary["records"] == 10 and summary["template"] == "refer"
  (folder / "distillation.json").unlink()  # stopped before its marker: the rewrite is read back, not redone
  prepare(config, workdir)
  assert read("train.jsonl") == train and len(shown) == 10
  bad = load_config(model=tiny_hf_dir, **{"tasks.distill": "summarise"})
  with pytest.raises(ValueError, match=r"config\.tasks\.distill must be '' \(off\), general, refer, math or a"):
    prepare(bad, str(tmp_path / "bad"))


def test_grounded_questions_join_the_train_split_and_leave_the_evaluation_splits_as_they_were(tmp_path):
  """tasks.grounded: that many grounded questions (exactly the unanswerable share asked for, each answered with an
  abstention) are added to the train split, every one verified; validation and heldout stay the same."""
  from conftest import itjax_in_process
  from itjax.data import grounded
  plain = tasks.make_splits(300, 2)
  more = tasks.make_splits(300, 2, n_grounded=40, grounded_unanswerable=0.25)
  assert more["validation"] == plain["validation"] and more["heldout"] == plain["heldout"]
  assert more["train"][:300] == plain["train"] and not any("grounded_qa" in r["types"] for r in plain["train"])
  added = more["train"][300:]
  assert len(added) == 40 and all(r["types"][0] == "grounded_qa" for r in added)
  assert sum(r["verifier"]["answer"] == grounded.ABSTENTION for r in added) == 10
  assert all(tasks.verify(r["messages"][1]["content"], r["verifier"]) for r in added)
  assert len({r["messages"][0]["content"] for r in more["train"] + more["validation"] + more["heldout"]}) == 340 + 60
  none = tasks.make_splits(300, 2, n_grounded=12, grounded_unanswerable=0.0)["train"][300:]
  assert not any(r["verifier"]["answer"] == grounded.ABSTENTION for r in none)
  with pytest.raises(ValueError, match=r"unanswerable grounded questions must be in \[0, 1\], got 2"):
    tasks.make_splits(10, 0, n_grounded=4, grounded_unanswerable=2)
  result = itjax_in_process("make-tasks", "--out", str(tmp_path / "g"), "--n", "20", "--grounded", "6")
  assert result.returncode == 0, result.stderr
  assert json.loads((tmp_path / "g" / "tasks.json").read_text())["sizes"]["train"] == 26
