"""Reading instruction data: each format becomes the same chat records; every malformed record names its line."""

import json

import pytest

from itjax.data import formats


def write(path, lines):
  path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
  return str(path)


def test_formats_become_chats(tmp_path):
  alpaca = write(tmp_path / "a.jsonl", [
      json.dumps({"instruction": "Add", "input": "2 and 3", "output": "5", "system": "Be terse."}),
      json.dumps({"instruction": "Name a colour.", "input": "", "output": "Blue."})])
  records, report = formats.read_records(alpaca)
  assert records[0].messages == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Add\n\n2 and 3"},
                                 {"role": "assistant", "content": "5"}]
  assert records[1].messages == [{"role": "user", "content": "Name a colour."},
                                 {"role": "assistant", "content": "Blue."}]
  assert records[1].where == f"{alpaca}:2" and report.records == 2
  share = write(tmp_path / "s.jsonl", [json.dumps({"conversations": [
      {"from": "system", "value": "S"}, {"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"},
      {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]})])
  assert [m["role"] for m in formats.read_records(share)[0][0].messages] == [
      "system", "user", "assistant", "user", "assistant"]
  pc = write(tmp_path / "p.jsonl", [
      json.dumps({"prompt": "Q", "completion": "A"}),
      json.dumps({"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]})])
  chats = [r.messages for r in formats.read_records(pc)[0]]
  assert chats[0] == chats[1] == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
  text = write(tmp_path / "t.jsonl", [json.dumps({"text": "plain words"})])
  assert formats.read_records(text)[0][0].text == "plain words"
  # A forced format wins over detection; extra fields are kept out of the chat.
  msgs = write(tmp_path / "m.jsonl", [json.dumps({"messages": [{"role": "user", "content": "Q"},
                                                              {"role": "assistant", "content": "A"}], "text": "x",
                                                 "types": ["sort"]})])
  assert formats.read_records(msgs)[0][0].messages[1] == {"role": "assistant", "content": "A"}
  assert formats.read_records(msgs, "text")[0][0].text == "x"


GOOD = json.dumps({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]})
BAD_LINES = [  # (line 2 of a messages file, the reason reported)
    ('{"messages": [', "not valid JSON"),
    (b'{"messages": "\xff\xfe"}', "not valid UTF-8"),
    ('["a", "list"]', "not a JSON object"),
    ('{"messages": []}', "empty field 'messages'"),
    ('{"other": 1}', "missing field 'messages'"),
    ('{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "A"}]}', "unknown role"),
    ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "A"}]}', "non-string content"),
    ('{"messages": [{"role": "user", "content": "Q"}]}', "conversation does not end with an assistant turn"),
    ('{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "  "}]}', "empty message"),
    ('{"messages": [{"role": "assistant", "content": "A"}]}', "no user turn before the assistant"),
    ('{"messages": [{"role": "user", "content": "Q"}, {"role": "system", "content": "S"}, '
     '{"role": "assistant", "content": "A"}]}', "misplaced system message"),
    ('{"messages": ["just text"]}', "malformed message"),
]


@pytest.mark.parametrize("line,reason", BAD_LINES, ids=[r for _, r in BAD_LINES])
def test_bad_record_names_file_and_line(tmp_path, line, reason):
  path = write(tmp_path / "d.jsonl", [GOOD, line, GOOD])
  with pytest.raises(formats.DataError) as e:
    formats.read_records(path)
  assert str(e.value).startswith(f"{path}:2: {reason}"), str(e.value)
  records, report = formats.read_records(path, on_error="skip")
  assert [r.where for r in records] == [f"{path}:1", f"{path}:3"]
  assert (report.records, report.skipped, dict(report.skipped_by_reason)) == (3, 1, {reason: 1})
  assert report.problems == [str(e.value)]


@pytest.mark.parametrize("fmt,record,reason", [
    ("alpaca", {"instruction": "Q"}, "missing field 'output'"),
    ("alpaca", {"instruction": "", "output": "A"}, "empty field 'instruction'"),
    ("alpaca", {"instruction": "Q", "input": ["x"], "output": "A"}, "non-string content"),
    ("sharegpt", {"conversations": [{"from": "bot", "value": "A"}]}, "unknown role"),
    ("prompt_completion", {"prompt": "Q", "completion": None}, "non-string content"),
    ("text", {"text": ""}, "empty field 'text'"),
])
def test_bad_records_in_other_formats(tmp_path, fmt, record, reason):
  first = {"alpaca": {"instruction": "Q", "output": "A"}, "sharegpt": {"conversations": [
      {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
           "prompt_completion": {"prompt": "Q", "completion": "A"}, "text": {"text": "t"}}[fmt]
  path = write(tmp_path / "d.jsonl", [json.dumps(first), json.dumps(record)])
  with pytest.raises(formats.DataError, match=f"^{path}:2: {reason}"):
    formats.read_records(path)


def test_file_level_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.jsonl: cannot open"):
    formats.read_records(str(tmp_path / "missing.jsonl"))
  empty = write(tmp_path / "e.jsonl", [b"", b"  "])
  with pytest.raises(formats.DataError, match="e.jsonl: no records"):
    formats.read_records(empty)
  unknown = write(tmp_path / "u.jsonl", ['{"question": "Q", "answer": "A"}'])
  with pytest.raises(formats.DataError, match="u.jsonl: unknown data format.*'answer', 'question'"):
    formats.read_records(unknown, on_error="skip")  # cannot be skipped: no record of the file could be read
  alpaca = write(tmp_path / "a.jsonl", ['{"instruction": "Q", "output": "A"}', GOOD])
  with pytest.raises(formats.DataError, match="a.jsonl:2: missing field 'instruction'.*read as alpaca"):
    formats.read_records(alpaca)
  with pytest.raises(ValueError, match="unknown data format 'csv'"):
    formats.read_records(alpaca, "csv")
