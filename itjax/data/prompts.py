"""Prompt files for `itjax generate`: JSONL with a `prompt` string or a `messages` chat list on every line."""

from __future__ import annotations

from itjax.data import chat
from itjax.errors import UserError
from itjax.io.jsonl import objects


def read_prompts(path: str) -> list[dict]:
  """Returns the records in order; a malformed line stops with `path:line: what is wrong`. Blank lines are skipped."""
  records = []
  for where, record in objects(path, "prompts file"):
    if isinstance(record.get("prompt"), str):
      if not record["prompt"]:
        raise UserError(f"{where}: 'prompt' is empty")
    elif "messages" in record:
      try:
        chat.validate(record["messages"])
      except ValueError as e:
        raise UserError(f"{where}: 'messages': {e}") from None
    else:
      raise UserError(f"{where}: expected a 'prompt' string or a 'messages' list, got keys {sorted(record)}")
    records.append(record)
  if not records:
    raise UserError(f"{path}: no prompts found")
  return records


NO_TEMPLATE = chat.NO_TEMPLATE  # a chat_template value: no template, the prompt text is the model input


def prompt_ids(tokenizer, record: dict, template: str | None, where: str) -> list[int]:
  """A prompt record's model input: its chat rendered with the template (None: the tokenizer's own) and the
  assistant's turn opened; with template 'none', its 'prompt' text as it stands."""
  if template == NO_TEMPLATE:
    if "prompt" not in record:
      raise UserError(f"{where}: --chat_template none needs a 'prompt' string, not 'messages'")
    return tokenizer.encode(record["prompt"])
  return tokenizer.encode_chat(record_messages(record), add_generation_prompt=True, template=template)


def record_messages(record: dict) -> list[dict]:
  """A record as a chat: a bare prompt becomes one user turn."""
  if "messages" in record:
    return record["messages"]
  return [{"role": "user", "content": record["prompt"]}]
