"""A task response's format, both ways: `render` writes an answer in a layout with modifiers, and `verify` checks
any response against a task's verifier kwargs: every formatting constraint, then the content answer.

The response is parsed, not matched against the generator's wording: wrappers are peeled off in the inverse order
they are applied (quotes, end phrase, title line), the body is read according to the layout, and the items or value
found are compared with the answer (case-insensitively when a case modifier is present).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from itjax.data import grounded

LIST_LAYOUTS = ("bullets", "numbered", "paragraphs")
LAYOUTS = (*LIST_LAYOUTS, "json")
CASES = ("lowercase", "uppercase")

_BULLET = re.compile(r"[*\-•]\s+(\S.*)")
_NUMBERED = re.compile(r"([0-9]{1,9})[.)]\s+(\S.*)")
_TITLE = re.compile(r"<<[^<>\n]*[^<>\s][^<>\n]*>>")


def verify(response: str, verifier: dict) -> bool:
  """True when `response` satisfies every constraint in `verifier` and states its answer; never raises on a response."""
  if not isinstance(response, str):
    return False
  mods = set(verifier.get("modifiers") or ())
  text = response.strip()
  if "lowercase" in mods and text != text.lower():
    return False
  if "uppercase" in mods and text != text.upper():
    return False
  if "no_commas" in mods and "," in text:
    return False
  if "quotes" in mods:
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
      return False
    text = text[1:-1].strip()
  if "end_phrase" in mods:
    phrase = verifier.get("phrase") or ""
    if not phrase or not text.endswith(phrase):
      return False
    text = text[:-len(phrase)].rstrip()
  if "title" in mods:
    first, _, text = text.partition("\n")
    if not _TITLE.fullmatch(first.strip()):
      return False
    text = text.strip()
  found = parse_body(text, verifier)
  if found is None:
    return False
  answer = verifier["answer"]
  if verifier.get("op") == "grounded_qa":  # judged by meaning: the value, or an abstention when the sheet lacks it
    return grounded.passes(found, {"answerable": answer != grounded.ABSTENTION, "answer": answer,
                                   "question": verifier.get("question") or ""})
  expected = [str(x) for x in answer] if isinstance(answer, list) else str(answer)
  if mods.intersection(CASES):
    found, expected = _fold(found), _fold(expected)
  return found == expected


def render(answer: list | int | str, layout: str | None, mods: Iterable[str], title: str = "",
           phrase: str = "") -> str:
  """The response stating `answer` in `layout` with the modifiers applied (title, end phrase, case, quotes)."""
  mods = set(mods)
  items = [str(x) for x in answer] if isinstance(answer, list) else None
  if layout == "json":
    body = json.dumps({"items": answer} if items is not None else {"answer": answer}, ensure_ascii=False)
  elif layout == "bullets":
    body = "\n".join(f"* {x}" for x in items)
  elif layout == "numbered":
    body = "\n".join(f"{i}. {x}" for i, x in enumerate(items, 1))
  elif layout == "paragraphs":
    body = "\n\n***\n\n".join(items)
  else:
    body = "\n".join(items) if items is not None else str(answer)
  if "title" in mods:
    body = f"<<{title}>>\n\n{body}"
  if "end_phrase" in mods:
    body = f"{body}\n\n{phrase}"
  if "lowercase" in mods:
    body = body.lower()
  if "uppercase" in mods:
    body = body.upper()
  return f'"{body}"' if "quotes" in mods else body


def parse_body(text: str, verifier: dict) -> list[str] | str | None:
  """The items (list answers) or the value (scalar answers) that a body states in its layout, else None."""
  is_list = isinstance(verifier["answer"], list)
  layout = verifier.get("layout")
  if layout == "json":
    return _parse_json(text, verifier, is_list)
  if not text or (layout in LIST_LAYOUTS and not is_list):
    return None
  if layout is None:
    return text.split() if is_list else text
  if layout == "paragraphs":
    blocks = [[]]
    for line in text.splitlines():
      if line.strip() == "***":
        blocks.append([])
      else:
        blocks[-1].append(line)
    items = ["\n".join(block).strip() for block in blocks]
    if not all(items):
      return None
  elif layout in ("bullets", "numbered"):
    pattern = _BULLET if layout == "bullets" else _NUMBERED
    matches = [pattern.fullmatch(line.strip()) for line in text.splitlines() if line.strip()]
    if not all(matches):
      return None
    if layout == "numbered" and [int(m.group(1)) for m in matches] != list(range(1, len(matches) + 1)):
      return None
    items = [m.group(m.lastindex).strip() for m in matches]
  else:
    return None
  n = verifier.get("n")
  return None if n is not None and len(items) != n else items


def _parse_json(text: str, verifier: dict, is_list: bool) -> list[str] | str | None:
  """A JSON object with exactly the expected keys; its single value read as items or as a scalar."""
  try:
    obj = json.loads(text)
  except (ValueError, RecursionError):
    return None
  keys = verifier.get("keys") or ["items" if is_list else "answer"]
  if not isinstance(obj, dict) or sorted(obj) != sorted(keys):
    return None
  value = obj[keys[0]]
  if not is_list:
    return _scalar(value)
  if not isinstance(value, list):
    return None
  items = [_scalar(v) for v in value]
  return None if None in items else items


def _scalar(value) -> str | None:
  """A JSON string or integer as text; anything else (bool, float, null, containers) is not a valid answer."""
  if isinstance(value, str):
    return value.strip()
  if isinstance(value, int) and not isinstance(value, bool):
    return str(value)
  return None


def _fold(found: list[str] | str) -> list[str] | str:
  return [x.casefold() for x in found] if isinstance(found, list) else found.casefold()
