"""IFEval scoring: verdicts and the four numbers equal the if-verifiable package's; Punkt offline; file:line errors."""

import json
import os
import random

import pytest

pytest.importorskip("if_verifiable")

from itjax.evals import ifeval  # noqa: E402

NO_COMMA = "punctuation:no_comma"
LOWER = "change_case:english_lowercase"
CAPITAL = "change_case:english_capital"
CAPITAL_WORDS = "change_case:capital_word_frequency"
BULLETS = "detectable_format:number_bullet_lists"
TITLE = "detectable_format:title"
JSON = "detectable_format:json_format"
HIGHLIGHTS = "detectable_format:number_highlighted_sections"
SECTIONS = "detectable_format:multiple_sections"
END = "startend:end_checker"
QUOTE = "startend:quotation"
EXISTENCE = "keywords:existence"
FORBIDDEN = "keywords:forbidden_words"
FREQUENCY = "keywords:frequency"
LETTERS = "keywords:letter_frequency"
WORDS = "length_constraints:number_words"
SENTENCES = "length_constraints:number_sentences"
PARAGRAPHS = "length_constraints:number_paragraphs"
POSTSCRIPT = "detectable_content:postscript"
PLACEHOLDERS = "detectable_content:number_placeholders"
REPEAT = "combination:repeat_prompt"
TWO = "combination:two_responses"
LANGUAGE = "language:response_language"

HELP = {"end_phrase": "Is there anything else I can help with?"}
HAIKU = "Write a haiku about the sea."
T, F = True, False

# (instructions as (id, kwargs) pairs, response, strict verdicts, loose verdicts), the verdicts worked out by hand
# from the checkers' code; None where the verdict rests on langdetect's statistics and only the package decides.
CASES = [
    ([(NO_COMMA, {})], "The sky is blue and the grass is green.", [T], [T]),
    ([(NO_COMMA, {})], "Red, green and blue are colours.", [F], [F]),
    ([(LOWER, {})], "this answer is written in english and every letter in it is lowercase, as the prompt asked.",
     [T], [T]),
    # A chatty first line breaks the lowercase; dropping the first line rescues it.
    ([(LOWER, {})], "Sure! Here is my answer:\nthis answer is written in english and every letter in it is lowercase.",
     [F], [T]),
    ([(CAPITAL, {})], "THIS ANSWER IS WRITTEN IN ENGLISH AND EVERY LETTER IN IT IS A CAPITAL LETTER.", None, None),
    ([(CAPITAL, {})], "This answer is NOT all in capital letters.", [F], [F]),
    ([(BULLETS, {"num_bullets": 3})], "* Apples are red.\n* Bananas are yellow.\n* Grapes are purple.", [T], [T]),
    ([(BULLETS, {"num_bullets": 3})], "* Apples are red.\n* Bananas are yellow.", [F], [F]),
    # A trailing "- ..." line counts as a fourth bullet; dropping the last line leaves exactly three.
    ([(BULLETS, {"num_bullets": 3})],
     "Here are three points:\n* Apples are red.\n* Bananas are yellow.\n* Grapes are purple.\n- Hope this helps",
     [F], [T]),
    ([(TITLE, {})], "<<Ode to the Sea>>\nThe waves roll in.", [T], [T]),
    ([(TITLE, {})], "Ode to the Sea\nThe waves roll in.", [F], [F]),
    ([(JSON, {})], '{"name": "Ada", "born": 1815}', [T], [T]),
    ([(JSON, {})], '```json\n{"name": "Ada"}\n```', [T], [T]),
    ([(JSON, {})], 'Here is the JSON you asked for:\n{"name": "Ada"}', [F], [T]),
    ([(JSON, {})], '**{"name": "Ada"}**', [F], [T]),  # only the markdown asterisks spoil it
    ([(END, HELP)], "Paris is the capital of France. Is there anything else I can help with?", [T], [T]),
    ([(END, HELP)], "Paris is the capital of France. Is there anything else I can help with?\n(Written in 2 s.)",
     [F], [T]),
    ([(QUOTE, {})], '"The whole answer is wrapped in double quotes."', [T], [T]),
    ([(QUOTE, {}), (NO_COMMA, {})], 'Sure, here it is:\n"The whole answer is wrapped in double quotes."',
     [F, F], [T, T]),
    ([(QUOTE, {})], '**"A bold quoted answer."**', [F], [T]),
    ([(EXISTENCE, {"keywords": ["apple", "banana"]})], "I like Apple pie and banana bread.", [T], [T]),
    ([(EXISTENCE, {"keywords": ["apple", "banana"]})], "I like apple pie.", [F], [F]),
    ([(FORBIDDEN, {"forbidden_words": ["rock"]})], "The band plays rocky jazz.", [T], [T]),  # whole words only
    ([(FORBIDDEN, {"forbidden_words": ["rock"]})], "We will Rock you.", [F], [F]),
    ([(WORDS, {"num_words": 10, "relation": "less than"})], "One two three four five.", [T], [T]),
    ([(WORDS, {"num_words": 20, "relation": "at least"})], "One two three four five.", [F], [F]),
    # Trained Punkt: "Dr." and "p.m." do not end sentences (naive splitting would count 3 in each).
    ([(SENTENCES, {"num_sentences": 3, "relation": "less than"})], "Dr. Smith arrived. He sat down.", [T], [T]),
    ([(SENTENCES, {"num_sentences": 3, "relation": "at least"})], "Dr. Smith arrived. He sat down.", [F], [F]),
    ([(SENTENCES, {"num_sentences": 3, "relation": "less than"})], "He arrived at 5 p.m. on Monday. Then he left.",
     [T], [T]),
    ([(HIGHLIGHTS, {"num_highlights": 2})], "This has *one part* and *another part* in it.", [T], [T]),
    ([(HIGHLIGHTS, {"num_highlights": 2})], "Only *one part* is highlighted here.", [F], [F]),
    ([(POSTSCRIPT, {"postscript_marker": "P.S."})], "See you at the party.\n\nP.S. Bring snacks.", [T], [T]),
    ([(POSTSCRIPT, {"postscript_marker": "P.S."})], "See you at the party.", [F], [F]),
    ([(REPEAT, {"prompt_to_repeat": HAIKU})], f"{HAIKU}\nWaves fold into foam\nsalt wind carries gull voices", [T], [T]),
    ([(REPEAT, {"prompt_to_repeat": HAIKU})], f"Okay!\n{HAIKU}\nWaves fold into foam", [F], [T]),
    ([(LANGUAGE, {"language": "de"})],
     "Das Wetter ist heute sehr schön und wir gehen am Nachmittag mit unseren Freunden im Park spazieren.", [T], [T]),
    ([(LANGUAGE, {"language": "de"})],
     "The weather is very nice today and we are going for a walk in the park with our friends.", [F], [F]),
    ([(PARAGRAPHS, {"num_paragraphs": 2})], "The first paragraph.\n***\nThe second paragraph.", [T], [T]),
    ([(CAPITAL_WORDS, {"capital_frequency": 2, "capital_relation": "at least"})], "I LOVE NEW york in spring.",
     [T], [T]),
    ([(TWO, {})], "Yes, it is.\n******\nNo, it is not.", [T], [T]),
    ([(PLACEHOLDERS, {"num_placeholders": 2})], "Dear [name], you live at [address].", [T], [T]),
    ([(FREQUENCY, {"keyword": "story", "frequency": 2, "relation": "at least"})], "A story about a story.", [T], [T]),
    ([(LETTERS, {"letter": "#", "let_frequency": 3, "let_relation": "at least"})], "#one #two", [F], [F]),
    ([(SECTIONS, {"section_spliter": "SECTION", "num_sections": 2})], "SECTION 1\nIntro.\nSECTION 2\nBody.",
     [T], [T]),
    # Several instructions in one prompt.
    ([(NO_COMMA, {}), (TITLE, {}), (HIGHLIGHTS, {"num_highlights": 1}), (EXISTENCE, {"keywords": ["sea"]})],
     "<<The Sea>>\nThe *sea* is calm tonight.", [T, T, T, T], [T, T, T, T]),
    ([(LOWER, {}), (END, {"end_phrase": "Any other questions?"}), (WORDS, {"num_words": 5, "relation": "at least"})],
     "the sea is calm tonight and the stars are bright. Any other questions?", [F, T, T], [F, T, T]),
    # Only dropping both the first and the last line leaves no comma.
    ([(TITLE, {}), (NO_COMMA, {})], "Here you go, a title follows:\n<<Night>>\nStars, moon and sky.",
     [T, F], [T, T]),
    # Nulls in kwargs, as in the HF copy of IFEval, are dropped before the checker is built.
    ([(NO_COMMA, {"num_words": None, "relation": None}), (WORDS, {"num_words": 3, "relation": "at least",
                                                                  "keywords": None})],
     "Three words here.", [T, T], [T, T]),
    # A reasoning block is stripped first (as the package does): strict passes only because of that.
    ([(NO_COMMA, {}), (LOWER, {})],
     "<think>Hmm, Let me think.</think>\nthe answer has no commas and is all lowercase english text about the sea.",
     [T, T], [T, T]),
    # Nothing to judge: an empty answer, blank space, an unterminated reasoning block fail every instruction.
    ([(NO_COMMA, {}), (TITLE, {}), (WORDS, {"num_words": 50, "relation": "less than"})], "", [F, F, F], [F, F, F]),
    ([(NO_COMMA, {}), (FORBIDDEN, {"forbidden_words": ["rock"]})], "  \n ", [F, F], [F, F]),
    ([(NO_COMMA, {})], "<think>still thinking about it", [F], [F]),
]


def write(path, lines):
  path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
  return str(path)


def case_record(i, case):
  instructions = case[0]
  prompt = f"Case {i}: follow every instruction."
  if instructions[0][0] == REPEAT:
    prompt = f"{HAIKU} First repeat the request word for word without change, then give your answer. ({i})"
  return {"key": 1000 + i, "prompt": prompt, "instruction_id_list": [iid for iid, _ in instructions],
          "kwargs": [kw for _, kw in instructions]}


@pytest.fixture(scope="module")
def isolated_nltk(tmp_path_factory):
  """A fresh itjax cache for the Punkt model, and NLTK's search path restored afterwards."""
  import nltk
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("ITJAX_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setattr(nltk.data, "path", list(nltk.data.path))
    yield


@pytest.fixture(scope="module")
def scored(isolated_nltk, tmp_path_factory):
  """The cases through the files: IFEval data, responses in shuffled order, some by key (as strings), some by prompt."""
  d = tmp_path_factory.mktemp("ifeval")
  records = [case_record(i, c) for i, c in enumerate(CASES)]
  data = write(d / "data.jsonl", records)
  lines = []
  for i, (record, case) in enumerate(zip(records, CASES)):
    which = {"key": str(record["key"])} if i % 3 == 0 else {"prompt": record["prompt"]} if i % 3 == 1 else record
    lines.append({**which, "response": case[1]})
  random.Random(0).shuffle(lines)
  records = ifeval.read_ifeval(data)
  responses = ifeval.read_responses(write(d / "responses.jsonl", lines), records)
  assert responses == [c[1] for c in CASES]
  return records, ifeval.score(records, responses)


def test_cases_cover_the_acceptance():
  ids = {iid for case in CASES for iid, _ in case[0]}
  assert len(CASES) >= 30 and len(ids) >= 12
  assert all(iid in ifeval.instruction_ids() for iid in ids)
  loose_only = [(i, j) for i, c in enumerate(CASES) if c[2]
                for j, (s, l) in enumerate(zip(c[2], c[3])) if l and not s]
  assert len(loose_only) >= 3
  assert any(c[2] and all(c[2]) for c in CASES) and any(c[2] and not any(c[3]) for c in CASES)


def test_verdicts_by_hand(scored):
  _, (_, rows) = scored
  for row, (_, response, strict, loose) in zip(rows, CASES):
    assert row["response"] == response
    if strict is not None:
      assert (row["strict"], row["loose"]) == (strict, loose), row["key"]
    assert row["follow_all_strict"] == all(row["strict"]) and row["follow_all_loose"] == all(row["loose"])
    assert all(not s or l for s, l in zip(row["strict"], row["loose"]))  # strict pass implies loose pass


def test_verdicts_and_numbers_equal_the_package(scored):
  from if_verifiable import IFEvalSample, evaluate_output_for_sample
  from if_verifiable.common import strip_thinking
  records, (metrics, rows) = scored
  binary_strict = binary_loose = passed_strict = passed_loose = total = 0
  per_id: dict[str, list[int]] = {}
  for record, row in zip(records, rows):
    sample = IFEvalSample(key=record["key"], prompt=record["prompt"],
                          instruction_id_list=record["instruction_id_list"], kwargs=record["kwargs"])
    results, scores = evaluate_output_for_sample("ifeval", sample, row["response"])
    n = len(record["instruction_id_list"])
    if not results:  # the package gives no verdicts for an empty answer: every instruction failed
      assert not strip_thinking(row["response"])
      assert scores.binary_strict == scores.partial_strict == scores.binary_loose == scores.partial_loose == 0
      results_strict = results_loose = [False] * n
    else:
      assert [r.instruction_id for r in results] == record["instruction_id_list"]
      results_strict = [r.strict_pass for r in results]
      results_loose = [r.loose_pass for r in results]
    assert (row["strict"], row["loose"]) == (results_strict, results_loose), record["key"]
    binary_strict += scores.binary_strict
    binary_loose += scores.binary_loose
    passed_strict += round(scores.partial_strict * n)
    passed_loose += round(scores.partial_loose * n)
    total += n
    for iid, s, l in zip(record["instruction_id_list"], results_strict, results_loose):
      counts = per_id.setdefault(iid, [0, 0, 0])
      counts[0] += 1
      counts[1] += s
      counts[2] += l
  prompts = len(records)
  assert metrics["prompt_strict"] == 100.0 * binary_strict / prompts
  assert metrics["prompt_loose"] == 100.0 * binary_loose / prompts
  assert metrics["inst_strict"] == 100.0 * passed_strict / total
  assert metrics["inst_loose"] == 100.0 * passed_loose / total
  assert metrics["n_prompts"] == prompts and metrics["n_instructions"] == total
  for iid, (n, s, l) in per_id.items():
    assert metrics[f"strict/{iid}"] == 100.0 * s / n and metrics[f"loose/{iid}"] == 100.0 * l / n
  assert sorted(k for k in metrics if k.startswith("strict/")) == sorted(f"strict/{i}" for i in per_id)
  assert 0 < metrics["prompt_strict"] < metrics["prompt_loose"] < 100
  assert metrics["inst_strict"] < metrics["inst_loose"]


def test_rows_keep_the_record(scored):
  records, (_, rows) = scored
  assert len(rows) == len(records)
  for record, row in zip(records, rows):
    assert {k: row[k] for k in record} == record
    assert len(row["strict"]) == len(row["loose"]) == len(record["instruction_id_list"])


def test_ensure_punkt_is_trained_offline_and_pickle_free(tmp_path, monkeypatch):
  import nltk
  import nltk.downloader
  from nltk.tokenize.punkt import PunktSentenceTokenizer

  def no_download(*args, **kwargs):
    raise AssertionError("NLTK tried to download")

  monkeypatch.setenv("ITJAX_CACHE", str(tmp_path))
  monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
  monkeypatch.setattr(nltk, "download", no_download)
  monkeypatch.setattr(nltk.downloader.Downloader, "download", no_download)
  where = ifeval.ensure_punkt()
  assert where == str(tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english")
  assert nltk.data.path[0] == str(tmp_path / "nltk_data")
  assert sorted(os.listdir(where)) == ["abbrev_types.txt", "collocations.tab", "ortho_context.tab",
                                       "sent_starters.txt"]
  assert not [p for p in tmp_path.rglob("*") if p.suffix == ".pickle"]
  assert os.path.samefile(str(nltk.data.find("tokenizers/punkt_tab/english/")), where)
  text = "Dr. Smith went to Washington. He arrived at 5 p.m. on Monday."
  sentences = nltk.data.load("nltk:tokenizers/punkt/english.pickle").tokenize(text)
  assert sentences == ["Dr. Smith went to Washington.", "He arrived at 5 p.m. on Monday."]
  assert len(PunktSentenceTokenizer().tokenize(text)) > 2  # an untrained Punkt splits at "Dr." and "p.m."
  # Written once: a second call finds it and leaves it alone, and no staging directory is left behind.
  stamps = {f: os.stat(os.path.join(where, f)).st_mtime_ns for f in os.listdir(where)}
  assert ifeval.ensure_punkt() == where
  assert {f: os.stat(os.path.join(where, f)).st_mtime_ns for f in os.listdir(where)} == stamps
  assert os.listdir(os.path.dirname(where)) == ["english"]


def test_ensure_punkt_loses_a_race_gracefully(tmp_path, monkeypatch):
  """Another process renames its copy into place first: ours is dropped and theirs used."""
  import shutil

  import nltk
  monkeypatch.setenv("ITJAX_CACHE", str(tmp_path))
  monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
  rename = os.rename

  def lose(src, dst):
    shutil.copytree(src, dst)
    rename(src, dst)  # fails: dst is a non-empty directory now

  monkeypatch.setattr(os, "rename", lose)
  where = ifeval.ensure_punkt()
  assert os.listdir(os.path.dirname(where)) == ["english"] and len(os.listdir(where)) == 4


# Reading files: every problem names its file and line.

GOOD = {"key": 1, "prompt": "Write without commas.", "instruction_id_list": [NO_COMMA], "kwargs": [{}]}
GOOD2 = {"key": "two", "prompt": "Write a title.", "instruction_id_list": [TITLE], "kwargs": [{}]}


def bad_data(tmp_path, line, at=3):
  """A data file whose line `at` (after a good line and a blank one) is `line`."""
  return write(tmp_path / "data.jsonl", [GOOD, ""] + [GOOD2] * (at - 3) + [line])


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ({**GOOD2, "key": 3, "prompt": None}, "'prompt' must be a non-empty string"),
    ({"key": 3, "prompt": "P", "instruction_id_list": [NO_COMMA]}, "missing field 'kwargs'"),
    ({**GOOD2, "instruction_id_list": ["x:y"]}, "unknown instruction id 'x:y' (known: "),
    ({**GOOD2, "instruction_id_list": []}, "non-empty list"),
    ({**GOOD2, "instruction_id_list": ["punctuation:no_commas"]},
     "unknown instruction id 'punctuation:no_commas' (did you mean 'punctuation:no_comma'? known: "),
    ({**GOOD2, "kwargs": [{}, {}]}, "'kwargs' must be a list of 1 objects, one per instruction, got 2 entries"),
    ({**GOOD2, "key": 1.5}, "'key' must be an int or a string"),
    ({**GOOD2, "key": "1"}, "duplicate key '1' (first at "),
    ({**GOOD2, "instruction_id_list": [WORDS], "kwargs": [{"num_words": 5, "relation": "about"}]}, "do not fit"),
    ({**GOOD2, "instruction_id_list": [WORDS], "kwargs": [{"num_wordz": 5, "relation": "less than"}]}, "do not fit"),
    ({**GOOD2, "instruction_id_list": [WORDS], "kwargs": [{"num_words": None, "relation": "less than"}]},
     "needs kwargs ['num_words']"),
    ({**GOOD2, "instruction_id_list": [EXISTENCE], "kwargs": [{"keywords": []}]}, "needs kwargs ['keywords']"),
])
def test_read_ifeval_errors(tmp_path, line, message):
  path = bad_data(tmp_path, line)
  with pytest.raises(ValueError) as e:
    ifeval.read_ifeval(path)
  assert str(e.value).startswith(f"{path}:3: ") and message in str(e.value)


def test_read_ifeval_files(tmp_path):
  unknown = bad_data(tmp_path, {**GOOD2, "instruction_id_list": [TITLE, "x:y"], "kwargs": [{}, {}]}, at=4)
  with pytest.raises(ValueError, match=rf"^{unknown}:4: unknown instruction id 'x:y' \(known: \d+ ids of IFEval"):
    ifeval.read_ifeval(unknown)
  assert [r["key"] for r in ifeval.read_ifeval(unknown, limit=2)] == [1, "two"]  # the bad line is never read
  empty = write(tmp_path / "empty.jsonl", ["", "  "])
  with pytest.raises(ValueError, match=rf"^{empty}: no records$"):
    ifeval.read_ifeval(empty)
  with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
    ifeval.read_ifeval(str(tmp_path / "nowhere.jsonl"))
  hf_style = write(tmp_path / "hf.jsonl", [{**GOOD, "kwargs": [{"num_words": None, "relation": None}]}])
  assert ifeval.read_ifeval(hf_style)[0]["kwargs"] == [{"num_words": None, "relation": None}]


def test_missing_extra_says_how_to_install(tmp_path, monkeypatch):
  import sys
  for name in [m for m in sys.modules if m == "if_verifiable" or m.startswith("if_verifiable.")]:
    monkeypatch.setitem(sys.modules, name, None)
  with pytest.raises(ImportError, match=r"pip install 'itjax\[eval\]'"):
    ifeval.read_ifeval(write(tmp_path / "data.jsonl", [GOOD]))


RECORDS = [GOOD, GOOD2, {**GOOD, "key": 1001, "prompt": "Write a list."}]


@pytest.mark.parametrize("lines, message", [
    (["{not json"], "not valid JSON"),
    ([{"key": 1}], "no 'response' field"),
    ([{"key": 1, "response": 5}], "'response' is not a string"),
    ([{"response": "hi"}], "neither 'key' nor 'prompt'"),
    ([{"key": 7, "response": "hi"}], "key 7 matches no record"),
    ([{"prompt": "Some other prompt.", "response": "hi"}], "'prompt' matches no record"),
    ([{"key": 1, "instruction_id_list": ["x:y"], "response": "hi"}], "unknown instruction id 'x:y'"),
    ([{"key": 1, "instruction_id_list": [TITLE], "response": "hi"}], "'instruction_id_list' differs"),
    ([{"key": 1, "prompt": "Write a title.", "response": "hi"}], "'prompt' differs"),
    ([{"key": "1001", "response": "hi"}, {"key": 1001, "response": "again"}], "answered twice (first at "),
])
def test_read_responses_errors(tmp_path, lines, message):
  path = write(tmp_path / "responses.jsonl", [{"key": "two", "response": "<<T>>"}, ""] + lines)
  at = 2 + len(lines)
  with pytest.raises(ValueError) as e:
    ifeval.read_responses(path, RECORDS)
  assert str(e.value).startswith(f"{path}:{at}: ") and message in str(e.value)


def test_read_responses_alignment(tmp_path):
  path = write(tmp_path / "responses.jsonl", [
      {"prompt": "Write a list.", "response": "c"}, {"key": "1", "response": "a"}, {**GOOD2, "response": "b"}])
  assert ifeval.read_responses(path, RECORDS) == ["a", "b", "c"]
  short = write(tmp_path / "short.jsonl", [{"key": 1001, "response": "c"}])
  with pytest.raises(ValueError, match=rf"^{short}: no response for 2 of 3 records \(first: key 1\)$"):
    ifeval.read_responses(short, RECORDS)
