"""Prompt files for `itjax generate`: JSONL with a `prompt` string or a `messages` chat list on every line."""

from __future__ import annotations

import json

from itjax import chat


def read_prompts(path: str) -> list[dict]:
  """Returns the records in order; a malformed line stops with `path:line: what is wrong`. Blank lines are skipped."""
  records = []
  try:
    f = open(path, "rb")
  except OSError as e:
    raise FileNotFoundError(f"{path}: cannot open prompts file ({e.strerror})") from None
  with f:
    for number, raw in enumerate(f, start=1):
      where = f"{path}:{number}"
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not valid UTF-8 (byte {e.start})") from None
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
      if isinstance(record.get("prompt"), str):
        if not record["prompt"]:
          raise ValueError(f"{where}: 'prompt' is empty")
      elif "messages" in record:
        try:
          chat.validate(record["messages"])
        except ValueError as e:
          raise ValueError(f"{where}: 'messages': {e}") from None
      else:
        raise ValueError(f"{where}: expected a 'prompt' string or a 'messages' list, got keys {sorted(record)}")
      records.append(record)
  if not records:
    raise ValueError(f"{path}: no prompts found")
  return records


def record_messages(record: dict) -> list[dict]:
  """A record as a chat: a bare prompt becomes one user turn."""
  if "messages" in record:
    return record["messages"]
  return [{"role": "user", "content": record["prompt"]}]
