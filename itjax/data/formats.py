"""Instruction data on disk -> records: alpaca, chat `messages`, ShareGPT `conversations`, prompt/completion, text.

Every JSONL line becomes one `Record` (a chat as messages, or plain text trained on all tokens) or one counted
problem `path:line: what is wrong`. The format is detected per file from its first record, or forced by name.
With `on_error='raise'` the first problem stops the read; with `'skip'` every problem is counted in the `Report`.
"""

from __future__ import annotations

import collections
import dataclasses

from itjax.io import jsonl
from itjax.data.chat import ROLES
from itjax.errors import InputNotFound, UserError

FORMATS = ("alpaca", "messages", "sharegpt", "prompt_completion", "text")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "model": "assistant"}
SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}
FORMAT_KEYS = {"alpaca": ("instruction", "input", "output", "system"), "messages": ("messages",),
               "sharegpt": ("conversations",), "prompt_completion": ("prompt", "completion", "system"),
               "text": ("text",)}  # the fields a format reads; any other field is the record's own


class DataError(UserError):
  """A bad record or file; the message starts with `path:line:`."""

  def __init__(self, where: str, reason: str, detail: str = ""):
    super().__init__(f"{where}: {reason}" + (f" ({detail})" if detail else ""))
    self.where, self.reason = where, reason


@dataclasses.dataclass
class Record:
  where: str  # path:line
  messages: list[dict] | None = None  # a chat (loss on the assistant turns)
  text: str | None = None  # general text (loss on every token)
  types: tuple[str, ...] = ()  # the record's own `types` (generated tasks carry them), for data.drop_types


@dataclasses.dataclass
class Report:
  """What happened to every record: used, skipped (by reason, each with its path:line), truncated, token counts."""
  records: int = 0
  used: int = 0
  truncated: int = 0
  left_out: int = 0  # records left out on purpose (data.drop_types), not problems
  left_out_by_type: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  tokens: int = 0
  target_tokens: int = 0
  packing_efficiency: float | None = None
  skipped_by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  problems: list[str] = dataclasses.field(default_factory=list)

  @property
  def skipped(self) -> int:
    return sum(self.skipped_by_reason.values())

  def skip(self, error: DataError) -> None:
    self.skipped_by_reason[error.reason] += 1
    self.problems.append(str(error))

  def merge(self, other: Report) -> None:
    for f in ("records", "used", "truncated", "left_out", "tokens", "target_tokens"):
      setattr(self, f, getattr(self, f) + getattr(other, f))
    self.skipped_by_reason.update(other.skipped_by_reason)
    self.left_out_by_type.update(other.left_out_by_type)
    self.problems.extend(other.problems)

  def summary(self) -> dict:
    return {"records": self.records, "used": self.used, "skipped": self.skipped, "truncated": self.truncated,
            "left_out": self.left_out, "left_out_by_type": dict(self.left_out_by_type), "tokens": self.tokens,
            "target_tokens": self.target_tokens, "packing_efficiency": self.packing_efficiency,
            "skipped_by_reason": dict(self.skipped_by_reason)}


def detect_format(record: dict) -> str | None:
  if "messages" in record:
    return "messages"
  if "conversations" in record:
    return "sharegpt"
  if "instruction" in record:
    return "alpaca"
  if "prompt" in record and "completion" in record:
    return "prompt_completion"
  if "text" in record:
    return "text"
  return None


def _string(record: dict, key: str, where: str, required: bool = True) -> str:
  if key not in record:
    if required:
      raise DataError(where, f"missing field '{key}'")
    return ""
  value = record[key]
  if not isinstance(value, str):
    raise DataError(where, "non-string content", f"'{key}' is {type(value).__name__}")
  if required and not value.strip():
    raise DataError(where, f"empty field '{key}'")
  return value


def check_messages(messages, where: str, key: str = "messages") -> list[dict]:
  """A chat must be system? (user assistant)+ in order of use, ending with an assistant turn, all strings."""
  if messages is None:
    raise DataError(where, f"missing field '{key}'")
  if not isinstance(messages, list) or not messages:
    raise DataError(where, f"empty field '{key}'" if messages == [] else f"'{key}' is not a list")
  for i, m in enumerate(messages):
    if not isinstance(m, dict):
      raise DataError(where, "malformed message", f"{key}[{i}] is {type(m).__name__}, expected an object")
    if m.get("role") not in ROLES:
      raise DataError(where, "unknown role", f"{key}[{i}] role {m.get('role')!r}; expected one of {ROLES}")
    if not isinstance(m.get("content"), str):
      raise DataError(where, "non-string content", f"{key}[{i}] content is {type(m.get('content')).__name__}")
    if m["role"] != "system" and not m["content"].strip():
      raise DataError(where, "empty message", f"{key}[{i}] ({m['role']}) has empty content")
    if m["role"] == "system" and i > 0:
      raise DataError(where, "misplaced system message", f"{key}[{i}]: a system message may only come first")
  turns = [m["role"] for m in messages if m["role"] != "system"]
  if not turns or turns[0] != "user":
    raise DataError(where, "no user turn before the assistant", f"'{key}' must start (after system) with user")
  if turns[-1] != "assistant":
    raise DataError(where, "conversation does not end with an assistant turn")
  return [{"role": m["role"], "content": m["content"]} for m in messages]


def to_record(record: dict, fmt: str, where: str) -> Record:
  """One parsed JSON object in format `fmt` -> Record; raises DataError."""
  if fmt == "text":
    return Record(where, text=_string(record, "text", where))
  if fmt == "messages":
    return Record(where, messages=check_messages(record.get("messages"), where))
  if fmt == "sharegpt":
    turns = record.get("conversations")
    if not isinstance(turns, list):
      raise DataError(where, "missing field 'conversations'" if turns is None else "'conversations' is not a list")
    messages = []
    for i, t in enumerate(turns):
      if not isinstance(t, dict):
        raise DataError(where, "malformed message", f"conversations[{i}] is {type(t).__name__}")
      if t.get("from") not in SHAREGPT_ROLES:
        raise DataError(where, "unknown role", f"conversations[{i}] from {t.get('from')!r}; expected one of "
                        f"{sorted(SHAREGPT_ROLES)}")
      messages.append({"role": SHAREGPT_ROLES[t["from"]], "content": t.get("value")})
    return Record(where, messages=check_messages(messages, where, "conversations"))
  system = _string(record, "system", where, required=False)
  head = [{"role": "system", "content": system}] if system else []
  if fmt == "alpaca":
    instruction = _string(record, "instruction", where)
    extra = _string(record, "input", where, required=False)
    user = instruction + ("\n\n" + extra if extra.strip() else "")
    return Record(where, messages=head + [{"role": "user", "content": user},
                                          {"role": "assistant", "content": _string(record, "output", where)}])
  if fmt == "prompt_completion":
    if isinstance(record.get("prompt"), list):  # conversational: prompt and completion are message lists
      completion = record.get("completion")
      if not isinstance(completion, list):
        raise DataError(where, "non-string content", "a message-list 'prompt' needs a message-list 'completion'")
      return Record(where, messages=check_messages(record["prompt"] + completion, where, "prompt+completion"))
    return Record(where, messages=head + [{"role": "user", "content": _string(record, "prompt", where)},
                                          {"role": "assistant", "content": _string(record, "completion", where)}])
  raise UserError(f"unknown data format {fmt!r}; expected one of {FORMATS}")


def to_object(record: Record, fmt: str) -> dict:
  """A Record as a JSON object in `fmt` (the inverse of `to_record`); raises DataError where `fmt` cannot hold it."""
  if (record.messages is None) != (fmt == "text"):
    raise DataError(record.where, f"cannot be written as {fmt}", "text and chats do not convert into each other")
  if fmt == "text":
    return {"text": record.text}
  if fmt == "messages":
    return {"messages": record.messages}
  if fmt == "sharegpt":
    return {"conversations": [{"from": SHAREGPT_FROM[m["role"]], "value": m["content"]} for m in record.messages]}
  system = [m["content"] for m in record.messages if m["role"] == "system"]
  chat = [m["content"] for m in record.messages if m["role"] != "system"]
  if len(chat) == 2:
    keys = ("instruction", "output") if fmt == "alpaca" else ("prompt", "completion")
    return {keys[0]: chat[0], keys[1]: chat[1], **({"system": system[0]} if system else {})}
  if fmt == "prompt_completion":
    return {"prompt": record.messages[:-1], "completion": record.messages[-1:]}
  raise DataError(record.where, "cannot be written as alpaca", f"a chat of {len(chat)} messages; alpaca holds "
                  "one user and one assistant message")


def read_records(path: str, fmt: str | None = None, on_error: str = "raise",
                 report: Report | None = None, transform=None) -> tuple[list[Record], Report]:
  """Reads a JSONL file; `fmt` None detects it from the first record. Blank lines are not records. `transform`
  (dict -> dict) is applied to each record's object before it is read (training's augmentation)."""
  if fmt is not None and fmt not in FORMATS:
    raise UserError(f"unknown data format {fmt!r}; expected one of {FORMATS}")
  if on_error not in ("raise", "skip"):
    raise UserError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
  report = Report() if report is None else report
  try:
    f = open(path, "rb")
  except OSError as e:
    raise InputNotFound(f"{path}: cannot open data file ({e.strerror})") from None
  records, seen = [], 0
  with f:
    for number, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      where = f"{path}:{number}"
      report.records += 1
      seen += 1
      try:
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise DataError(where, "not valid UTF-8", f"byte {e.start}") from None
        try:
          obj = jsonl.parse(line)
        except ValueError as e:
          raise DataError(where, "not valid JSON", str(e)) from None
        if not isinstance(obj, dict):
          raise DataError(where, "not a JSON object", f"got {type(obj).__name__}")
        if transform is not None:
          obj = transform(obj)
        if fmt is None:
          fmt = detect_format(obj)
          if fmt is None:
            raise DataError(path, "unknown data format",
                            f"line {number} has keys {sorted(obj)}; expected 'messages', 'conversations', "
                            "'instruction', 'prompt'+'completion' or 'text' (or name the format)")
        try:
          record = to_record(obj, fmt, where)
          types = obj.get("types", [])
          if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise DataError(where, "'types' is not a list of strings", f"got {types!r:.60}")
          record.types = tuple(types)
          records.append(record)
        except DataError as e:
          if e.reason.startswith("missing field"):
            raise DataError(where, e.reason, f"the file is read as {fmt}; name the format if that is wrong") from None
          raise
      except DataError as e:
        if on_error == "raise" or e.reason == "unknown data format":
          raise
        report.skip(e)
  if seen == 0:
    raise DataError(path, "no records", "the file is empty")
  return records, report
