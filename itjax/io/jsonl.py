"""JSONL files of objects, read strictly: the first bad line stops with `path:line: what is wrong`."""

from __future__ import annotations

import json
from collections.abc import Iterator

from itjax.errors import InputNotFound, UserError


def _constant(name: str):
  raise ValueError(f"{name} is not a JSON value")


def parse(line: str | bytes):
  """json.loads, strictly: NaN and Infinity are refused, and nesting too deep for Python is an error, not a crash.
  Raises ValueError saying what is wrong."""
  try:
    return json.loads(line, parse_constant=_constant)
  except json.JSONDecodeError as e:
    raise ValueError(f"{e.msg} at column {e.colno}") from None
  except RecursionError:
    raise ValueError("nested too deeply") from None


def objects(path: str, what: str) -> Iterator[tuple[str, dict]]:
  """(`path:line`, object) for every non-blank line; `what` names the file in an open error."""
  for where, _, value in lines(path, what):
    yield where, value


def lines(path: str, what: str) -> Iterator[tuple[str, str, dict]]:
  """(`path:line`, the line as it stands without its line break, object) for every non-blank line."""
  try:
    f = open(path, "rb")
  except OSError as e:
    raise InputNotFound(f"{path}: cannot open {what} ({e.strerror})") from None
  with f:
    for number, raw in enumerate(f, start=1):
      where = f"{path}:{number}"
      try:
        line = raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError as e:
        raise UserError(f"{where}: not valid UTF-8 (byte {e.start})") from None
      if not line.strip():
        continue
      try:
        value = parse(line)
      except ValueError as e:
        raise UserError(f"{where}: not valid JSON ({e})") from None
      if not isinstance(value, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(value).__name__}")
      yield where, line, value
