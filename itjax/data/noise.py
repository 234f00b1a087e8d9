"""Noisy training records for data-quality ablations: a given share of the generated tasks gets a bad response.

Three kinds of noise, each a response its record's verifier rejects:
wrong_answer   the right format around a wrong value (two list items swapped, a number, a date or a letter
               changed, an abstention for a value the sheet holds or a value for one it does not)
broken_format  the right value in another layout, or without one of its modifiers (title, quotes, case, end phrase)
truncated      the right response cut off between 30% and 90% of its length

Exactly round(rate x n) records are corrupted, chosen by a seeded draw, and the kinds take turns over them. The
prompt, types and verifier stay as they were (the verifier still states the right answer), and the record gains
`noise` (its kind), so that a curation step can be scored on what it kept. A corruption the verifier would still
accept is never used: after 20 such draws the next kind is tried.
"""

from __future__ import annotations

import datetime
import random
import re
import string

from itjax.data import grounded
from itjax.data.verify import LIST_LAYOUTS, render, verify
from itjax.errors import UserError

KINDS = ("wrong_answer", "broken_format", "truncated")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TITLE = re.compile(r"<<([^<>\n]*)>>")


def parse_kinds(spec: str) -> tuple[str, ...]:
  """'wrong_answer,truncated' -> the kinds it names, in KINDS order."""
  names = [s.strip() for s in spec.split(",") if s.strip()]
  unknown = [n for n in names if n not in KINDS]
  if unknown or not names:
    raise UserError(f"unknown noise kind {', '.join(map(repr, unknown or [spec]))}; known: {', '.join(KINDS)}")
  return tuple(k for k in KINDS if k in names)


def _title(record: dict) -> str:
  """The title the response carries (cased as written), so that a re-rendering keeps it."""
  found = _TITLE.search(record["messages"][-1]["content"])
  return found.group(1) if found else ""


def _again(record: dict, answer, layout, mods) -> str:
  """The record's response written again with some of its parts changed."""
  v = record["verifier"]
  return render(answer, layout, mods, _title(record), v["phrase"] or "")


def _wrong_value(value, rng: random.Random):
  """Another value of the same kind: a number moved by 1-9, a date by 1-9 days, an acronym's letter changed, an
  unanswerable question given a made-up value, a grounded value replaced by an abstention."""
  step = rng.randint(1, 9)
  if isinstance(value, int):
    return value + step if value < 10 or rng.random() < 0.5 else value - step
  text = str(value)
  if _DATE.fullmatch(text):
    return (datetime.date.fromisoformat(text) + datetime.timedelta(days=rng.choice((-step, step)))).isoformat()
  if text == grounded.ABSTENTION:
    return str(rng.randint(2, 99))
  if text.isalpha() and text.isupper():
    i = rng.randrange(len(text))
    return text[:i] + rng.choice([c for c in string.ascii_uppercase if c != text[i]]) + text[i + 1:]
  return grounded.ABSTENTION


def _wrong_answer(record: dict, rng: random.Random) -> str:
  """A list with two different items swapped (or, for numbers, half the time one item moved), or another value."""
  v = record["verifier"]
  answer = v["answer"]
  if isinstance(answer, list):
    answer = list(answer)
    pairs = [(i, j) for i in range(len(answer)) for j in range(i + 1, len(answer)) if answer[i] != answer[j]]
    i = rng.randrange(len(answer))
    if isinstance(answer[i], int) and (rng.random() < 0.5 or not pairs):
      answer[i] = _wrong_value(answer[i], rng)
    elif pairs:
      i, j = rng.choice(pairs)
      answer[i], answer[j] = answer[j], answer[i]
  else:
    answer = _wrong_value(answer, rng)
  return _again(record, answer, v["layout"], v["modifiers"])


def _broken_format(record: dict, rng: random.Random) -> str:
  """Another layout, or one modifier left out (no_commas is the content's, not the rendering's)."""
  v = record["verifier"]
  layouts = (None, *LIST_LAYOUTS, "json") if isinstance(v["answer"], list) else (None, "json")
  options = [("layout", x) for x in layouts if x != v["layout"]]
  options += [("drop", m) for m in v["modifiers"] if m != "no_commas"]
  what, which = rng.choice(options)
  if what == "layout":
    return _again(record, v["answer"], which, v["modifiers"])
  return _again(record, v["answer"], v["layout"], [m for m in v["modifiers"] if m != which])


def _truncated(record: dict, rng: random.Random) -> str:
  text = record["messages"][-1]["content"]
  cut = min(len(text) - 1, max(1, round(len(text) * rng.uniform(0.3, 0.9))))
  return text[:cut].rstrip() or text[:1]


_MAKERS = {"wrong_answer": _wrong_answer, "broken_format": _broken_format, "truncated": _truncated}


def corrupt(record: dict, kind: str, rng: random.Random) -> dict:
  """The record with a response of `kind` that its verifier rejects (or of the next kind, where none of 20 draws of
  that kind is rejected)."""
  order = KINDS[KINDS.index(kind):] + KINDS[:KINDS.index(kind)]
  for tried in order:
    for _ in range(20):
      response = _MAKERS[tried](record, rng)
      if not verify(response, record["verifier"]):
        messages = [*record["messages"][:-1], {**record["messages"][-1], "content": response}]
        return {**record, "messages": messages, "noise": tried}
  raise UserError(f"no noisy response fails the verifier of {record['messages'][0]['content'][:60]!r}")


def add_noise(records: list[dict], rate: float, seed: int, kinds: tuple[str, ...] = KINDS) -> list[dict]:
  """`records` with exactly round(rate x len(records)) of them corrupted (seeded choice; kinds take turns)."""
  if not 0 <= rate <= 1:
    raise UserError(f"tasks noise rate must be in [0, 1], got {rate}")
  rng = random.Random(f"itjax-noise:{seed}")
  chosen = sorted(rng.sample(range(len(records)), round(rate * len(records))))
  out = list(records)
  for turn, i in enumerate(chosen):
    out[i] = corrupt(records[i], kinds[turn % len(kinds)], rng)
  return out
