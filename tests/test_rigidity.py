"""Rigidity: phrasings and prompt_parts, perturbations that change prompts but keep their answers, refusals, metrics."""

import datetime
import difflib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import types

import pytest

from itjax.data import grounded, perturb, tasks
from itjax.evals import rigidity
from itjax.evals.subject import Settings
from conftest import assert_verdicts_reproduce

TEXT_EDITS = ("typos_2", "typos_5", "case", "whitespace")
CONTENT = set(tasks.WORDS)
UNIT_FACTORS = {(big, small): factor for big, small, factor in tasks.UNITS}
UNIT_NAMES = {unit for pair in UNIT_FACTORS for unit in pair}


def draw(seed, n, phrasings="one"):
  rng = random.Random(seed)
  return [tasks.make_task(rng, phrasings=phrasings) for _ in range(n)]


@pytest.fixture(scope="module")
def records():
  return draw(11, 300) + draw(12, 100, "all")


def user(record):
  return record["messages"][0]["content"]


def perturbed_text(result):
  return result["messages"][-1]["content"]


# --- the generator's phrasings and prompt_parts ---

def test_every_constraint_and_default_line_has_three_distinct_phrasings():
  for constraint in tasks.CONSTRAINTS:
    wordings = tasks.phrasings_of({"id": constraint})
    assert len(wordings) >= 3 and len(set(wordings)) == len(wordings), constraint
  for form in ("items", "alone", "only"):
    wordings = tasks.phrasings_of({"id": "default", "form": form})
    assert len(wordings) >= 3 and len(set(wordings)) == len(wordings), form


def test_prompt_parts_rebuild_the_prompt(records):
  for record in records:
    parts = json.loads(json.dumps(record["prompt_parts"]))
    assert tasks.join_prompt(parts) == user(record)
    assert parts["task"] == user(record)[:len(parts["task"])]
    ids = [s["id"] for s in parts["sentences"]]
    assert sorted(i for i in ids if i != "default") == sorted(record["types"][1:])
    assert ("default" in ids) == (record["verifier"]["layout"] is None)
    for sentence in parts["sentences"]:
      assert sentence["text"] == tasks.phrasings_of(sentence)[sentence["phrasing"]].format(**parts["fill"])


def test_phrasings_one_says_phrasing_zero_and_all_says_every_phrasing():
  one, every = draw(5, 400), draw(5, 400, "all")
  assert {s["phrasing"] for r in one for s in r["prompt_parts"]["sentences"]} == {0}
  used = {(s["id"], s.get("form"), s["phrasing"]) for r in every for s in r["prompt_parts"]["sentences"]}
  assert {i for _, _, i in used} == {0, 1, 2}
  assert {c for c, _, _ in used} == set(tasks.CONSTRAINTS) | {"default"}
  # The switch changes only the wording: the same tasks, verifiers and answers.
  assert [r["verifier"] for r in one] == [r["verifier"] for r in every]
  assert [r["prompt_parts"]["task"] for r in one] == [r["prompt_parts"]["task"] for r in every]
  assert sum(user(a) != user(b) for a, b in zip(one, every)) > 200
  with pytest.raises(ValueError, match="phrasings must be one of 'one', 'all'"):
    tasks.make_task(random.Random(0), phrasings="some")


def test_write_splits_records_the_phrasings(tmp_path):
  tasks.write_splits(str(tmp_path), n=20, seed=1, phrasings="all")
  assert json.loads((tmp_path / "tasks.json").read_text())["phrasings"] == "all"
  line = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
  assert tasks.join_prompt(line["prompt_parts"]) == user(line)


# --- perturbations change prompts, deterministically ---

def test_unknown_perturbation_names_the_flag_and_the_known_names(records):
  with pytest.raises(ValueError, match=r"--perturbations: unknown perturbation 'typo'; known: typos_2, .*plain_t"):
    perturb.perturb(records[0], "typo", 0)
  with pytest.raises(ValueError, match="--perturbations: .*'nope'"):
    rigidity.check_perturbations("case,nope")
  assert rigidity.check_perturbations(None) == perturb.PERTURBATIONS
  assert rigidity.check_perturbations(" case, system,case") == ("case", "system")


def test_each_perturbation_changes_every_prompt_it_applies_to(records):
  for name in perturb.PERTURBATIONS:
    applied = 0
    for record in records:
      result = perturb.perturb(record, name, 0)
      if result is None:
        continue
      applied += 1
      clean = [{"role": "user", "content": user(record)}]
      assert (result["messages"], result["template"]) != (clean, True), name
      assert result["template"] is (name != "plain_template")
      assert result["messages"][-1]["role"] == "user"
      if name not in ("system", "plain_template"):
        assert perturbed_text(result) != user(record), name
      if name == "system":
        assert result["messages"][0]["role"] == "system" and perturbed_text(result) == user(record)
    expected = len(records) // 10 if name == "typos_2" else len(records) // 3 if name == "typos_5" else len(records)
    assert applied >= expected, (name, applied)


def test_perturbations_are_deterministic_per_seed(records):
  def outputs(name, seed):
    return [perturb.perturb(r, name, seed) for r in records[:150]]
  for name in perturb.PERTURBATIONS:
    assert outputs(name, 3) == outputs(name, 3), name
    if name != "plain_template":  # nothing is drawn for it
      assert outputs(name, 3) != outputs(name, 4), name


def test_perturbations_do_not_depend_on_the_process_hash_seed(records):
  script = ("import json, random; from itjax.data import tasks, perturb; rng = random.Random(2); "
            "rs = [tasks.make_task(rng) for _ in range(20)]; "
            "print(json.dumps([perturb.perturb(r, n, 1) for r in rs for n in perturb.PERTURBATIONS]))")
  runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
  assert runs[0] == runs[1] and len(json.loads(runs[0])) == 20 * len(perturb.PERTURBATIONS)


def test_reworded_says_every_sentence_another_way_and_reordered_moves_the_task_last(records):
  for record in records:
    parts = record["prompt_parts"]
    reworded = perturbed_text(perturb.perturb(record, "reworded", 0))
    assert reworded.startswith(parts["task"] + " ")
    for sentence in parts["sentences"]:
      assert sentence["text"] not in reworded
    reordered = perturbed_text(perturb.perturb(record, "reordered", 0))
    assert reordered.endswith(" " + parts["task"])
    head, texts = reordered[:-len(parts["task"]) - 1], [s["text"] for s in parts["sentences"]]
    assert all(t in head for t in texts) and len(head) == len(" ".join(texts))
  bare = {"messages": records[0]["messages"], "types": records[0]["types"], "verifier": records[0]["verifier"]}
  assert perturb.perturb(bare, "reworded", 0) is None and perturb.perturb(bare, "reordered", 0) is None


# --- typo rates ---

def _one_edit(a, b):
  """True when b is a one-character edit of a: a swap of neighbours, a drop, an insertion or a replacement."""
  if abs(len(a) - len(b)) == 1:
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))
  if len(a) != len(b) or a == b:
    return False
  diff = [i for i in range(len(a)) if a[i] != b[i]]
  return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and
                            a[diff[1]] == b[diff[0]])


@pytest.mark.parametrize("name,rate", [("typos_2", 0.02), ("typos_5", 0.05)])
def test_typo_rates_are_within_one_point_over_a_thousand_prompts(name, rate):
  edited = eligible = 0
  for record in draw(21, 1000):
    words = perturb.eligible_words(record)
    eligible += len(words)
    result = perturb.perturb(record, name, 0)
    if result is None:
      continue
    before, after = user(record).split(), perturbed_text(result).split()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert changed
    edited += len(changed)
    for a, b in changed:
      assert _one_edit(a.strip(perturb._EDGE), b.strip(perturb._EDGE)), (a, b)
  assert eligible > 10_000
  assert abs(edited / eligible - rate) < 0.01, (edited, eligible)


def test_typo_counts_are_stochastically_rounded_per_prompt():
  """Each prompt's expected share of edited words is the rate itself, whatever its number of eligible words."""
  for record in draw(22, 4):
    eligible = len(perturb.eligible_words(record))
    for name, rate in (("typos_2", 0.02), ("typos_5", 0.05)):
      edited = 0
      for seed in range(400):
        result = perturb.perturb(record, name, seed)
        if result is not None:
          edited += sum(a != b for a, b in zip(user(record).split(), perturbed_text(result).split()))
      assert abs(edited / (400 * eligible) - rate) < 0.004, (name, eligible, edited)


def test_a_typo_never_spells_a_protected_word():
  edits = {perturb._edited_word(random.Random(seed), "tigers", frozenset({"tiger", "tigres"})) for seed in range(300)}
  assert len(edits) > 10 and not edits & {"tiger", "tigres", "tigers"}
  assert all(_one_edit("tigers", e) for e in edits)


# --- answers stay valid: a solver per op recomputes the answer from the perturbed prompt ---

def _flat(text):
  return " ".join(text.split())


def _content_words(text):
  return [w for w in re.findall(r"[A-Za-z]+", text) if w in CONTENT]


def _listing(text):
  """The longest run of numbers separated by commas or spaces."""
  runs = re.findall(r"\d+(?:,? \d+)+", text)
  return [int(x) for x in re.findall(r"\d+", max(runs, key=len))]


def _quoted_phrase(text):
  """The double-quoted text made of content words only (a phrase or a text to count)."""
  return next(q for q in re.findall(r'"([^"]*)"', text) if q.split() and set(q.split()) <= CONTENT)


def _solve_unit_convert(text):
  value, big = next((int(v), u) for v, u in re.findall(r"(\d+) ([A-Za-z]+)", text) if u in UNIT_NAMES)
  small = next(w for w in re.findall(r"[A-Za-z]+", text) if w in UNIT_NAMES and w != big)
  return value * UNIT_FACTORS[(big, small)]


def _solve_date_add(text):
  date = re.search(r"\d{4}-\d{2}-\d{2}", text).group()
  (days,) = re.findall(r"(?<![\d-])\d+(?![\d-])", text.replace(date, ""))
  return (datetime.date.fromisoformat(date) + datetime.timedelta(days=int(days))).isoformat()


def _solve_arithmetic(text):
  if m := re.search(r"(\d+) \+ (\d+) \* (\d+)", text):
    return int(m[1]) + int(m[2]) * int(m[3])
  if m := re.search(r"(\d+) \* (\d+) - (\d+)", text):
    return int(m[1]) * int(m[2]) - int(m[3])
  return sum(_listing(text))


def _solve_grounded_qa(text):
  """The sheet's value for the attribute the question asks about (the closest question wording of the sheet's kind
  of entity, so typos and casing in the question do not matter), or the abstention when the sheet lacks it."""
  _, sheet, rest = text.split("---", 2)
  fields = dict(line.split(": ", 1) for line in sheet.strip().split("\n"))
  kind = next(k for k in grounded.KINDS.values() if k.label in fields)
  entity = fields[kind.label]
  question = _flat(rest.split("?", 1)[0].split(":", 1)[1]).lower()
  score = lambda a: max(difflib.SequenceMatcher(None, question, q.format(name=entity).lower().rstrip("?")).ratio()
                        for q in kind.attributes[a].questions)  # noqa: E731
  attribute = kind.attributes[max(kind.attributes, key=score)]
  return fields.get(attribute.label, grounded.ABSTENTION)


SOLVERS = {
    "grounded_qa": _solve_grounded_qa,
    "sort_words": lambda t: sorted(_content_words(t)),
    "reverse_words": lambda t: _content_words(t)[::-1],
    "dedupe": lambda t: list(dict.fromkeys(_content_words(t))),
    "sort_numbers": lambda t: sorted(_listing(t), reverse=bool(re.search("descending|largest to smallest", t, re.I))),
    "extract_numbers": lambda t: [int(x) for x in re.findall(r"\d+", next(
        q for q in re.findall(r'"([^"]*)"', t) if re.search(r"\d", q)))],
    "acronym": lambda t: "".join(w[0] for w in _quoted_phrase(t).split()).upper(),
    "count_letter": lambda t: "".join(_content_words(t)).count(re.search(r"'([a-z])'", t)[1]),
    "word_count": lambda t: len(_quoted_phrase(t).split()),
    "max_number": lambda t: max(_listing(t)),
    "arithmetic": _solve_arithmetic,
    "unit_convert": _solve_unit_convert,
    "date_add": _solve_date_add,
}


def _literal_spans(text):
  """What must survive verbatim: quoted, << >>, { } and [ ] spans, and tokens with digits."""
  spans = re.findall(r'"[^"]*"|<<.*?>>|\{[^{}]*\}|\[[^\[\]]*\]|(?<![A-Za-z])\'[^\']*\'', text)
  return spans + [t.strip(".,;:?!()") for t in text.split() if re.search(r"\d", t)]


def _check_solvable(record, text, name):
  v = record["verifier"]
  op = v["op"]
  assert op in SOLVERS, f"no solver for op {op!r}: add one to SOLVERS"
  prepare = (lambda t: t) if op == "grounded_qa" else _flat  # the sheet is read line by line
  assert SOLVERS[op](prepare(text)) == v["answer"], (name, op, text)
  assert SOLVERS[op](prepare(user(record))) == v["answer"]  # the solvers work: they solve the clean prompt too
  for sheet in re.findall(r"---.*?---", user(record), re.S):
    assert sheet in text, (name, text)
  if v["phrase"]:
    assert f'"{v["phrase"]}"' in text
  source = user(record) if name in TEXT_EDITS else record["prompt_parts"]["task"]
  for span in _literal_spans(source):
    assert span in text, (name, span, text)
  if name in TEXT_EDITS:  # the content vocabulary and the order words are untouched, in place
    keep = CONTENT | UNIT_NAMES | set(tasks.NOUNS) | {"ascending", "descending", "largest", "smallest", "biggest"}
    kept = lambda t: [w for w in re.findall(r"[A-Za-z]+", t) if w.lower() in keep]  # noqa: E731
    assert kept(text) == kept(user(record)), (name, text)


def test_perturbed_prompts_keep_the_answer_of_every_op(records):
  by_op = {}
  for record in records + draw(31, 600, "all"):
    by_op.setdefault(record["verifier"]["op"], []).append(record)
  assert set(by_op) == set(tasks.OPS)
  for op, chosen in by_op.items():
    assert len(chosen) >= 15, op
    for record in chosen:
      assert tasks.verify(record["messages"][1]["content"], record["verifier"])
      for name in perturb.PERTURBATIONS:
        for seed in (0, 1):
          result = perturb.perturb(record, name, seed)
          if result is not None:
            _check_solvable(record, perturbed_text(result), name)


def test_protected_text_of_free_text_prompts_survives():
  record = {"key": 1, "prompt": "Write a note to 'Sam' about the [place] and end with \"see you soon\". It's a "
                                "short note; use <<Note Title>> and {braces} as they are. Mention the word banana.",
            "instruction_id_list": ["startend:end_checker"], "kwargs": [{"end_phrase": "see you soon"}]}
  spans = ["'Sam'", "[place]", '"see you soon"', "<<Note Title>>", "{braces}", "banana"]
  for seed in range(40):
    for name in ("typos_5", "case", "whitespace"):
      result = perturb.perturb(record, name, seed)
      if result is not None:
        assert result["messages"] == [{"role": "user", "content": perturbed_text(result)}]
        for span in spans:
          assert span in perturbed_text(result), (name, perturbed_text(result))
    assert perturb.perturb(record, "reworded", seed) is None and perturb.perturb(record, "reordered", seed) is None
  sheet = {"messages": [{"role": "user", "content": "Answer from the sheet.\n---\nname: Orla Venn\nborn in: Tarsk\n"
                                                    "---\nWhere was Orla Venn born? Give just the place."}],
           "verifier": {"answer": "Tarsk", "phrase": None}}
  for seed in range(40):
    for name in ("typos_5", "case", "whitespace"):
      result = perturb.perturb(sheet, name, seed)
      if result is not None:
        sheet_text, question = perturbed_text(result).split("\n---", 1)[0], perturbed_text(result).rsplit("---", 1)[1]
        assert "---\nname: Orla Venn\nborn in: Tarsk\n---" in perturbed_text(result), sheet_text
        assert re.search(r"Orla\s+Venn\s+born", question), question  # words of the sheet stay as they are


# --- refusals ---

REFUSALS = {
    "I can't help with that request.": "decline",
    "I cannot assist with this.": "decline",
    "I\u2019m sorry, but I am unable to comply.": "decline",
    "Sorry, I can't do that.": "decline",
    "As a policy I must decline.": "decline",
    "Could you please rephrase the question?": "clarify",
    "Can you clarify what you want sorted?": "clarify",
    "Did you mean the words in the list?": "clarify",
    "I don't understand the task.": "clarify",
    "Please provide more details about the format.": "clarify",
    "It is not clear which numbers you mean.": "clarify",
    "* apple\n* banana\n* cherry": None,
    "I can help with that: 42": None,
    "Sure! The sum is 17.": None,
    "<<Sorted Words>>\n\nanchor\nbridge\n\nHope this helps.": None,
    "I understand. Here is the list: 3 5 8": None,
    "": None,
}


@pytest.mark.parametrize("text,expected", list(REFUSALS.items()))
def test_refusal_class(text, expected):
  assert rigidity.refusal_class(text) == expected


# --- metrics ---

def _row(index, perturbation, passed, response="x"):
  return {"index": index, "perturbation": perturbation, "passed": passed, "response": response,
          "refusal": rigidity.refusal_class(response)}


def test_drop_compares_with_clean_accuracy_on_the_same_records():
  rows = [_row(0, "clean", True), _row(1, "clean", False), _row(2, "clean", True), _row(3, "clean", False),
          _row(1, "typos_2", True), _row(3, "typos_2", False),
          _row(0, "case", False), _row(1, "case", False), _row(2, "case", True), _row(3, "case", False, " ")]
  metrics, bars = rigidity.summarize(rows, ("typos_2", "case", "reworded"))
  assert metrics["clean"] == 50.0
  assert metrics["accuracy/typos_2"] == 50.0 and metrics["drop/typos_2"] == -50.0 and metrics["n/typos_2"] == 2
  assert metrics["accuracy/case"] == 25.0 and metrics["drop/case"] == 25.0 and metrics["n/case"] == 4
  assert metrics["n/reworded"] == 0 and "accuracy/reworded" not in metrics
  assert metrics["worst_drop"] == 25.0 and metrics["spread"] == pytest.approx(12.5)
  assert metrics["empty_rate"] == pytest.approx(100 / 6) and metrics["refusal_rate"] == 0.0
  assert list(bars) == ["clean", "typos_2", "case"]


class _FakeTokenizer:
  """Ids are indices into a table of the model inputs; decoding an input gives its scripted response."""

  def __init__(self, script):
    self.script, self.inputs = script, []

  def _id(self, key):
    self.inputs.append(key)
    return [len(self.inputs) - 1]

  def encode_chat(self, messages, add_generation_prompt=True, template=None):
    assert add_generation_prompt and template == "chatml"
    return self._id(("chat", json.dumps(messages)))

  def encode(self, text, add_bos=None):
    return self._id(("plain", text))

  def decode(self, ids, skip_special_tokens=True):
    return self.script(self.inputs[ids[0]])


def _fake_subject(script):
  calls = []

  def generate(prompts, settings, desc, batch_size=None, reuse=False):
    calls.append((len(prompts), desc))
    return [types.SimpleNamespace(tokens=list(p)) for p in prompts]
  subject = types.SimpleNamespace(tokenizer=_FakeTokenizer(script), template="chatml", generate=generate)
  return subject, calls


def test_evaluate_generates_once_and_scores_each_perturbation():
  records = draw(41, 3)
  names = ("case", "whitespace", "system", "plain_template")
  right = [r["messages"][1]["content"] for r in records]
  by_text = {user(r): (i, "clean") for i, r in enumerate(records)}
  for i, r in enumerate(records):
    for name in ("case", "whitespace"):
      by_text[perturbed_text(perturb.perturb(r, name, 0))] = (i, name)

  def script(key):
    kind, payload = key
    if kind == "plain":
      return "I'm sorry, but I can't help with that."
    messages = json.loads(payload)
    if messages[0]["role"] == "system":
      return right[by_text[messages[-1]["content"]][0]]
    i, name = by_text[messages[-1]["content"]]
    if name == "clean":
      return right[i] if i < 2 else "wrong"
    if name == "case":
      return right[i] if i == 0 else "wrong"
    return "" if i == 0 else right[i]

  subject, calls = _fake_subject(script)
  out = rigidity.evaluate(subject, records, Settings(progress=False), names)
  assert calls == [(15, "rigidity")]
  m = out.metrics
  third = 100 / 3
  assert m["clean"] == pytest.approx(2 * third)
  expected = {"case": third, "whitespace": 2 * third, "system": 100.0, "plain_template": 0.0}
  for name, accuracy in expected.items():
    assert m[f"accuracy/{name}"] == pytest.approx(accuracy) and m[f"n/{name}"] == 3
    assert m[f"drop/{name}"] == pytest.approx(2 * third - accuracy)
  assert m["worst_drop"] == pytest.approx(2 * third)
  assert m["spread"] == pytest.approx(statistics.pstdev(expected.values()))
  assert m["empty_rate"] == pytest.approx(100 / 12) and m["refusal_rate"] == pytest.approx(25.0)
  assert list(out.bars) == ["clean", *names] and len(out.rows) == 15
  plain = [r for r in out.rows if r["perturbation"] == "plain_template"]
  assert all(r["refusal"] == "decline" and r["template"] is False and not r["passed"] for r in plain)
  assert {r["perturbation"] for r in out.rows} == {"clean", *names}
  assert_verdicts_reproduce(rigidity.Rigidity(), out, {"clean", "drop/case", "accuracy/system", "refusal_rate",
                                                       "empty_rate"})


def test_evaluate_with_ifeval_records_adds_prefixed_metrics():
  pytest.importorskip("if_verifiable")
  records = draw(42, 2)
  ifeval_records = [{"key": 7, "prompt": "Describe a quiet lake in two sentences. Do not use any commas.",
                     "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}]

  def script(key):
    kind, payload = key
    text = payload if kind == "plain" else json.loads(payload)[-1]["content"]
    if "lake" in text.lower():
      return "The lake is still. Nothing moves." if kind == "chat" else "Still, calm, quiet."
    return "wrong"

  subject, calls = _fake_subject(script)
  out = rigidity.evaluate(subject, records, Settings(progress=False), ("case", "reworded", "plain_template"),
                          ifeval_records)
  assert len(calls) == 1
  m = out.metrics
  assert m["ifeval/clean"] == 100.0 and m["ifeval/accuracy/case"] == 100.0
  assert m["ifeval/accuracy/plain_template"] == 0.0 and m["ifeval/drop/plain_template"] == 100.0
  assert "ifeval/n/reworded" not in m and m["n/reworded"] == 2 and m["clean"] == 0.0
  only = rigidity.evaluate_ifeval(subject, ifeval_records, Settings(progress=False))
  assert all(k.startswith("ifeval/") for k in only.metrics) and only.metrics["ifeval/n/system"] == 1
  assert only.metrics["ifeval/accuracy/system"] == 100.0 and "ifeval/n/reordered" not in only.metrics


def test_inputs_the_chat_template_refuses_are_left_out_and_noted():
  records = draw(43, 2)

  def script(key):
    return "wrong"
  subject, calls = _fake_subject(script)
  encode_chat = subject.tokenizer.encode_chat

  def no_system(messages, add_generation_prompt=True, template=None):
    if messages[0]["role"] == "system":
      raise ValueError("System role not supported")
    return encode_chat(messages, add_generation_prompt, template)
  subject.tokenizer.encode_chat = no_system
  out = rigidity.evaluate(subject, records, Settings(progress=False), ("system", "case"))
  assert calls == [(4, "rigidity")] and out.metrics["n/system"] == 0 and out.metrics["n/case"] == 2
  assert out.note == "system: inputs the chat template refused were left out (ValueError: System role not supported)"
  bare = [{k: v for k, v in r.items() if k != "prompt_parts"} for r in records]
  note = rigidity.evaluate(subject, bare, Settings(progress=False), ("reworded", "case")).note
  assert note == "reworded: applied to no task record (rewording and reordering need the prompt_parts that itjax " \
                 "make-tasks writes)"


def test_config_checks_tasks_phrasings():
  from itjax.training import config
  c = config.base_config()
  c.model, c.data.train = "demo", "train.jsonl"
  assert c.tasks.phrasings == "one"
  c.tasks.phrasings = "all"
  config.validate(c)
  c.tasks.phrasings = "many"
  with pytest.raises(ValueError, match=r"config\.tasks\.phrasings must be one or all, got 'many'"):
    config.validate(c)


def test_augmentation_perturbs_the_share_it_says_with_the_suites_perturbations(records):
  """data.augment: about `rate` of the task records get one of the named perturbations (the rigidity suite's code),
  the same on every call, their answers kept and still verified; other records pass unchanged."""
  from itjax.data import augment
  from itjax.data.tasks import make_splits, verify
  train = make_splits(1000, 9, phrasings="all")["train"]
  augmenter = augment.Augmenter(("typos_5", "case", "reordered"), 0.5, 3)
  out = [augmenter(r) for r in train]
  changed = [(a, b) for a, b in zip(train, out) if b is not a]
  assert 0.45 <= len(changed) / len(train) <= 0.55, len(changed)
  assert {b["augmented"] for _, b in changed} == {"typos_5", "case", "reordered"}
  for a, b in changed:
    assert b["messages"][-1] == a["messages"][-1] and b["messages"][0]["content"] != a["messages"][0]["content"]
    assert b["messages"][:-1] == perturb.perturb(a, b["augmented"], 3)["messages"]
    assert verify(b["messages"][-1]["content"], b["verifier"])
  assert [augment.Augmenter(("typos_5", "case", "reordered"), 0.5, 3)(r) for r in train] == out
  assert sum(augmenter.counts[n] for n in augmenter.names) == len(changed) and "1,000 task records" in \
      augmenter.summary()
  plain = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
  assert augmenter(plain) is plain
  with pytest.raises(Exception, match="unknown perturbation 'plain_template'"):
    augment.check(("plain_template",), 0.5)
