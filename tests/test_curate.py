"""`itjax curate`: planted duplicates, contamination and filters counted exactly; records written unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itjax.curate import curate as C
from itjax.data.formats import DataError, Record, to_object, to_record
from conftest import itjax_in_process

STORY = ("Once upon a time an old keeper lived alone in a lighthouse on a rocky island far from the mainland and "
         "every evening he climbed the narrow stairs to light the great lamp so that ships passing in the dark "
         "would see the rocks and steer safely home while storms rolled across the grey sea and gulls cried above "
         "the waves until one winter night a small boat appeared").split()
EVAL_PROMPTS = ["Write a detailed essay about the history of the printing press in Europe and its effect on the "
                "spread of literacy",
                "Compose a limerick about a cat who learned to play the violin in the city orchestra during a "
                "long cold winter",
                "Hi there"]


def story(change: int | None = None) -> str:
  return " ".join("lantern" if i == change else w for i, w in enumerate(STORY))


def write_jsonl(path, objects, dump=json.dumps) -> list[str]:
  lines = [dump(o) for o in objects]
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return lines


@pytest.fixture
def eval_file(tmp_path):
  path = tmp_path / "ifeval.jsonl"
  records = [{"key": i, "prompt": p, "instruction_id_list": [], "kwargs": []} for i, p in enumerate(EVAL_PROMPTS)]
  path.write_text(json.dumps(records[0]) + "\n\n" + "\n".join(json.dumps(r) for r in records[1:]) + "\n")
  return path  # the prompts stand on lines 1, 3 and 4


def planted(eval_words_1: list[str], eval_words_2: list[str]) -> list[dict]:
  a = {"instruction": "What is the capital of France?", "output": "The capital of France is Paris."}
  return [
      a,  # 1
      {"instruction": "Name three primary colours.", "output": "Red, yellow and blue are the primary colours."},
      {"instruction": "what is the CAPITAL of   france", "output": "the capital of france is paris"},  # dup of 1
      {"instruction": "Tell me a story about a lighthouse keeper.", "output": story()},  # 4
      {"instruction": "  What is the capital of France ? ", "output": "The capital  of France is Paris!!"},  # dup 1
      {"instruction": "Tell me a story about a lighthouse keeper.", "output": story(30)},  # near 4
      {"instruction": "Explain gravity.", "output": ""},  # empty
      {"instruction": "Please help me with this: " + " ".join(eval_words_1[2:15]) + " thanks a lot, really.",
       "output": "Here is a short essay on printing."},  # contaminated by eval line 1
      {"instruction": "Explain magnetism.", "output": "   \n\t"},  # empty
      {"instruction": "Translate 'good morning' into German.", "output": "Guten Morgen."},  # 10
      {"instruction": "Tell me a story about a lighthouse keeper.", "output": story(50)},  # near 4
      {"instruction": "Write a funny poem.", "output": "Sure: " + " ".join(eval_words_2[:13]) + "."},  # eval 3
      {"instruction": "List the planets nearest the sun.", "output": "Mercury, Venus, Earth and Mars."},  # 13
      {"instruction": "Repeat after me: the quick brown fox", "output": "The quick brown fox."},  # repeats
      {"instruction": "Is water wet?", "output": "Yes"},  # too short for min_chars 5
  ]


def test_planted_counts_and_first_of_each_cluster(tmp_path, eval_file):
  data = tmp_path / "data.jsonl"
  lines = write_jsonl(data, planted(EVAL_PROMPTS[0].split(), EVAL_PROMPTS[1].split()))
  out = tmp_path / "out" / "curated.jsonl"
  curated = C.curate([str(data)], str(out), C.Options(decontaminate=(str(eval_file),), min_chars=5))
  assert curated.summary() == {"records": 15, "kept": 5, "removed": {
      "exact_duplicate": 2, "near_duplicate": 2, "contaminated": 2, "empty": 2, "too_short": 1, "too_long": 0,
      "repeats_instruction": 1, "not_selected": 0}}
  assert out.read_text().splitlines() == [lines[i - 1] for i in (1, 2, 4, 10, 13)]
  removed = [json.loads(line) for line in (tmp_path / "out" / "curated.removed.jsonl").read_text().splitlines()]
  assert [(r["where"].rsplit(":", 1)[1], r["reason"], r.get("matched")) for r in removed] == [
      ("3", "exact_duplicate", f"{data}:1"), ("5", "exact_duplicate", f"{data}:1"),
      ("6", "near_duplicate", f"{data}:4"), ("7", "empty", None), ("8", "contaminated", f"{eval_file}:1"),
      ("9", "empty", None), ("11", "near_duplicate", f"{data}:4"), ("12", "contaminated", f"{eval_file}:3"),
      ("14", "repeats_instruction", None), ("15", "too_short", None)]
  assert [r["record"] for r in removed] == [json.loads(lines[int(r["where"].rsplit(":", 1)[1]) - 1]) for r in removed]
  assert curated.notes == ["1 eval prompts have fewer than --ngram 13 words and were not checked"]


def test_first_reason_wins_and_passes_can_be_turned_off(tmp_path, eval_file):
  data = tmp_path / "data.jsonl"
  write_jsonl(data, planted(EVAL_PROMPTS[0].split(), EVAL_PROMPTS[1].split()))
  curated = C.curate([str(data)], str(tmp_path / "o.jsonl"), C.Options(dedup=()))
  assert curated.summary()["removed"] == {**dict.fromkeys(C.REASONS, 0), "empty": 2, "repeats_instruction": 1}
  # an exact duplicate of a contaminated record is counted as the duplicate it is found as first
  write_jsonl(data, [{"instruction": EVAL_PROMPTS[0], "output": "An essay."}] * 2)
  curated = C.curate([str(data)], str(tmp_path / "o.jsonl"), C.Options(decontaminate=(str(eval_file),)))
  assert [(i.reason, i.matched) for i in curated.items] == [("contaminated", f"{eval_file}:1"),
                                                            ("exact_duplicate", f"{data}:1")]


def test_near_threshold_is_the_true_shingle_jaccard(tmp_path):
  data = tmp_path / "data.jsonl"
  write_jsonl(data, [{"text": story()}, {"text": story(10)}])
  first, second = C.read_items(str(data))
  similarity = C.jaccard(C.shingles(first), C.shingles(second))
  assert 0.8 < similarity < 0.95
  for threshold, removed in ((similarity - 0.005, 1), (similarity + 0.005, 0)):
    curated = C.curate([str(data)], str(tmp_path / "o.jsonl"), C.Options(dedup=("near",), near_threshold=threshold))
    assert curated.summary()["removed"]["near_duplicate"] == removed, threshold


FORMATS = {
    "alpaca": lambda i, text: {"instruction": f"Question {i}?", "input": "", "output": text, "id": i},
    "messages": lambda i, text: {"messages": [{"role": "system", "content": "Be kind."},
                                              {"role": "user", "content": f"Question {i}?"},
                                              {"role": "assistant", "content": text}], "types": ["x"]},
    "sharegpt": lambda i, text: {"conversations": [{"from": "human", "value": f"Question {i}?"},
                                                   {"from": "gpt", "value": text}], "id": i},
    "prompt_completion": lambda i, text: {"prompt": f"Question {i}?", "completion": text, "id": i},
    "text": lambda i, text: {"text": f"Question {i}? {text}" if text else " \n"},
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_round_trips_unchanged(tmp_path, fmt):
  make = FORMATS[fmt]
  objects = [make(1, "Café au lait is coffee with milk."), make(2, "Tea is brewed from leaves."),
             make(1, "CAFÉ au lait  is coffee with milk"), make(3, "")]
  data = tmp_path / f"{fmt}.jsonl"
  lines = write_jsonl(data, objects, dump=lambda o: json.dumps(o, separators=(",", ":")))  # \u00e9, no spaces
  out = tmp_path / "out.jsonl"
  curated = C.curate([str(data)], str(out), C.Options())
  assert curated.fmt == fmt
  assert curated.summary()["removed"]["exact_duplicate"] == 1 and curated.summary()["removed"]["empty"] == 1
  assert out.read_bytes() == (lines[0] + "\n" + lines[1] + "\n").encode()


def test_other_formats_are_written_in_the_first_inputs(tmp_path):
  first, second, text = tmp_path / "a.jsonl", tmp_path / "m.jsonl", tmp_path / "t.jsonl"
  write_jsonl(first, [{"instruction": "Hello?", "output": "Hello to you."}])
  write_jsonl(second, [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                                     {"role": "assistant", "content": "Hello."}], "id": 7}])
  out = tmp_path / "out.jsonl"
  C.curate([str(first), str(second)], str(out), C.Options())
  assert [json.loads(line) for line in out.read_text().splitlines()][1] == {
      "instruction": "Hi?", "output": "Hello.", "system": "Be brief.", "id": 7}
  write_jsonl(text, [{"text": "Plain prose."}])
  with pytest.raises(DataError, match=f"{text}:1: cannot be written as alpaca"):
    C.curate([str(first), str(text)], str(out), C.Options())


def test_to_object_is_the_inverse_of_to_record():
  chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
          {"role": "assistant", "content": "Hello."}]
  longer = chat + [{"role": "user", "content": "And?"}, {"role": "assistant", "content": "That is all."}]
  for fmt in ("alpaca", "messages", "sharegpt", "prompt_completion"):
    for messages in (chat, longer)[:1 if fmt == "alpaca" else 2]:
      assert to_record(to_object(Record("x:1", messages=messages), fmt), fmt, "x:1").messages == messages, fmt
  assert to_record(to_object(Record("x:1", text="Prose."), "text"), "text", "x:1").text == "Prose."
  with pytest.raises(DataError, match="x:1: cannot be written as alpaca .a chat of 4 messages"):
    to_object(Record("x:1", messages=longer), "alpaca")
  with pytest.raises(DataError, match="x:1: cannot be written as messages"):
    to_object(Record("x:1", text="Prose."), "messages")


def test_repeats_instruction_definition():
  assert C.repeats_instruction("Say: hello world", "Hello, world!")
  assert C.repeats_instruction("Write a poem", "write a POEM.")
  assert not C.repeats_instruction("Answer yes or no: is the sky blue?", "Yes")  # under half the words
  assert not C.repeats_instruction("Say hello", "Hello there")  # not contained


class WordTokenizer:
  """Counts words: one token per word of every message, plus one per message."""

  def encode_chat(self, messages, add_generation_prompt=True, template=None):
    return [0] * sum(len(m["content"].split()) + 1 for m in messages)

  def encode(self, text):
    return [0] * len(text.split())


def test_too_long_counts_tokens_of_the_whole_chat(tmp_path):
  data = tmp_path / "data.jsonl"
  write_jsonl(data, [{"instruction": "one two", "output": "three four five"},  # 7 tokens
                     {"instruction": "one two three", "output": "four five six"}])  # 8 tokens
  curated = C.curate([str(data)], str(tmp_path / "o.jsonl"), C.Options(max_tokens=7), WordTokenizer())
  assert [i.reason for i in curated.items] == [None, "too_long"]
  with pytest.raises(ValueError, match="--max_tokens needs --model"):
    C.curate([str(data)], str(tmp_path / "o.jsonl"), C.Options(max_tokens=7))


def test_select_random_is_seeded_and_bounded(tmp_path):
  data = tmp_path / "data.jsonl"
  write_jsonl(data, [{"instruction": f"Count to {i}.", "output": f"Counting up to {i} now."} for i in range(10)])
  kept = []
  for seed in (0, 0, 1):
    curated = C.curate([str(data)], str(tmp_path / "o.jsonl"), C.Options(select=4, seed=seed))
    assert curated.summary()["kept"] == 4 and curated.summary()["removed"]["not_selected"] == 6
    kept.append([i.where for i in curated.kept])
  assert kept[0] == kept[1] != kept[2]
  with pytest.raises(ValueError, match=r"--select 11: only 10 records remain"):
    C.curate([str(data)], str(tmp_path / "o.jsonl"), C.Options(select=11))


def test_eval_prompts_are_the_user_turns_of_task_files(tmp_path):
  asked = "Sort these words alphabetically and answer in lowercase letters with one word on each line please"
  answer = "apple banana cherry dragon eagle forest garden harbor island jacket kettle lemon meadow needle"
  tasks = tmp_path / "heldout.jsonl"
  write_jsonl(tasks, [{"messages": [{"role": "user", "content": asked}, {"role": "assistant", "content": answer}],
                       "types": ["sort"]}])
  data = tmp_path / "data.jsonl"
  write_jsonl(data, [{"instruction": asked.upper() + "!", "output": "Done."},
                     {"instruction": "Sort my words.", "output": answer}])
  curated = C.curate([str(data)], str(tmp_path / "o.jsonl"), C.Options(decontaminate=(str(tasks),)))
  assert [(i.reason, i.matched) for i in curated.items] == [("contaminated", f"{tasks}:1"), (None, None)]


def test_eval_file_not_jsonl_names_file_and_line(tmp_path):
  data, bad = tmp_path / "data.jsonl", tmp_path / "eval.json"
  write_jsonl(data, [{"instruction": "Hi?", "output": "Hello."}])
  bad.write_text('{"prompt": "fine"}\n[{"prompt": "a JSON array"},\n')
  with pytest.raises(ValueError, match=f"{bad}:2: not valid JSON"):
    C.curate([str(data)], str(tmp_path / "o.jsonl"), C.Options(decontaminate=(str(bad),)))
  assert not (tmp_path / "o.jsonl").exists()


def test_report_and_cli_json(tmp_path, eval_file):
  data = tmp_path / "data.jsonl"
  write_jsonl(data, planted(EVAL_PROMPTS[0].split(), EVAL_PROMPTS[1].split()))
  out, report = tmp_path / "out.jsonl", tmp_path / "report"
  result = itjax_in_process("curate", "--data", str(data), "--out", str(out), "--decontaminate", str(eval_file),
                            "--min_chars", "5", "--report", str(report), "--json")
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout)
  assert summary["records"] == 15 and summary["kept"] == 5 and sum(summary["removed"].values()) == 10
  assert list(summary["removed"]) == list(C.REASONS)
  assert "| removed: near_duplicate | 2 |" in (report / "report.md").read_text()
  assert {p.name for p in report.iterdir()} == {"report.md", "lengths.png", "removed.png", "categories.png"}
  assert (tmp_path / "out.removed.jsonl").exists()


def test_k_center_picks_one_per_cluster_first():
  from itjax.curate.select import k_center
  rng = np.random.default_rng(0)
  centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
  labels = np.array([0, 0, 1, 2, 3, 1, 2, 3, 0, 1, 2, 3])
  points = centres[labels] + rng.normal(scale=0.3, size=(len(labels), 2))
  chosen = k_center(points, 6)
  assert sorted(labels[chosen[:4]]) == [0, 1, 2, 3] and chosen[0] == 0
  assert len(set(chosen)) == 6
  with pytest.raises(ValueError, match="cannot choose 13 of 12"):
    k_center(points, 13)


@pytest.fixture(scope="module")
def tiny_model(tiny_hf_dir):
  from itjax.interop.loading import load_model
  return load_model(tiny_hf_dir)


def test_ifd_equals_the_ratio_of_transformers_losses(tiny_model, tiny_hf_dir):
  """IFD = mean loss of the response given the instruction / mean loss of the response alone, same targets."""
  import torch
  import transformers
  from itjax.curate.select import ifd_scores, ifd_sequences
  chats = [[{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue, like the sky."}],
           [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three."},
            {"role": "assistant", "content": "One, two, three."}]]
  ours = ifd_scores(tiny_model.config, tiny_model.params, tiny_model.tokenizer, chats, progress=False)
  reference = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, torch_dtype=torch.float32).eval()

  def mean_loss(ids, start):
    with torch.no_grad():
      logits = reference(torch.tensor([ids])).logits[0, :-1].double()
    nll = -torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return nll[start - 1:].mean().item()

  for chat, got in zip(chats, ours):
    given, start, alone, alone_start = ifd_sequences(tiny_model.tokenizer, chat)
    assert given[start:] == alone[alone_start:]  # the same targets in both
    want = mean_loss(given, start) / mean_loss(alone, alone_start)
    assert got == pytest.approx(want, rel=1e-4)


def test_model_selection_quality_and_diversity(tiny_model, tmp_path):
  data = tmp_path / "data.jsonl"
  records = [{"instruction": f"Say the word number {i}.", "output": f"Word {i} is {'apple banana cherry'.split()[i % 3]}."}
             for i in range(8)]
  write_jsonl(data, records)
  out = str(tmp_path / "o.jsonl")
  diverse = C.curate([str(data)], out, C.Options(select=3, by="diversity", dedup=()), model=tiny_model)
  assert diverse.summary()["kept"] == 3 and diverse.kept[0].where.endswith(":1")  # k-center starts at the first
  quality = C.curate([str(data)], out, C.Options(select=3, by="quality", dedup=()), model=tiny_model)
  scored = [i.ifd for i in quality.items]
  assert all(s is not None and s > 0 for s in scored)
  below = sorted((s for s in scored if s < 1), reverse=True)  # a random model: the instruction rarely helps
  assert sorted((i.ifd for i in quality.kept), reverse=True) == below[:3]
  assert len(below) >= 3 or any("have IFD < 1" in n for n in quality.notes)
  removed = [json.loads(line) for line in open(C.removed_path(out))]
  assert all("ifd" in r for r in removed if r["reason"] == "not_selected")


def test_quality_keeps_the_highest_ifd_below_one(tiny_model, tmp_path, monkeypatch):
  from itjax.curate import select as curate_select
  data = tmp_path / "data.jsonl"
  write_jsonl(data, [{"instruction": f"Task {i}.", "output": f"Answer {i}."} for i in range(8)])
  scores = [0.5, 1.2, 0.9, 0.7, 0.95, 1.0, 0.2, 0.99]
  monkeypatch.setattr(curate_select, "ifd_scores", lambda *args, **kwargs: list(scores))
  out = str(tmp_path / "o.jsonl")
  picked = C.curate([str(data)], out, C.Options(select=3, by="quality", dedup=()), model=tiny_model)
  assert [i.where.rsplit(":", 1)[1] for i in picked.kept] == ["3", "5", "8"]  # 0.9, 0.95, 0.99; never 1.0 or 1.2
  few = C.curate([str(data)], out, C.Options(select=7, by="quality", dedup=()), model=tiny_model)
  assert len(few.kept) == 6 and "only 6 records have IFD < 1" in few.notes[0]
  with pytest.raises(ValueError, match="--by quality needs --model"):
    C.curate([str(data)], out, C.Options(select=3, by="quality"))
