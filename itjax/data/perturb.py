"""Perturbations of an instruction prompt that keep its task and its answer: the rigidity suite's inputs.

`perturb(record, name, seed)` takes a task record (itjax.data.tasks) or an IFEval record and returns the perturbed
model input, {"messages": the chat without the assistant turn, "template": whether a chat template renders it}, or
None where the perturbation does not apply to that record. The same (seed, prompt, name) always gives the same input.

  typos_2, typos_5  character edits (swap, drop, duplicate, keyboard neighbour) in 2% / 5% of the eligible words
  case              random upper/lower/title casing of eligible words
  whitespace        runs of spaces and newlines collapsed or extended
  reworded          every constraint sentence in another of its phrasings (task records with prompt_parts)
  reordered         the constraint sentences shuffled and put before the task text (the same records)
  system            a neutral system turn added
  plain_template    no chat template: the user text is the raw model input

Protected text is never edited by typos or casing: words with digits, anything inside double or single quotes, << >>,
{ } or [ ], a fact sheet between --- lines, the end phrase and every literal the verifier checks (the answer; an
IFEval record's kwargs strings), and the content vocabulary (the generator's words, nouns and units, and the words
that set an order's direction). Whitespace edits leave the same spans alone.
"""

from __future__ import annotations

import math
import random
import re
from typing import Iterable

from itjax.data import grounded, tasks
from itjax.errors import UserError

PERTURBATIONS = ("typos_2", "typos_5", "case", "whitespace", "reworded", "reordered", "system", "plain_template")
# Those that apply to any prompt text; reworded and reordered need a task record's prompt_parts.
FREE_TEXT_PERTURBATIONS = ("typos_2", "typos_5", "case", "whitespace", "system", "plain_template")
TYPO_RATES = {"typos_2": 0.02, "typos_5": 0.05}
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are an assistant. Answer the user's request.",
    "You are a knowledgeable and friendly assistant.",
    "You are an AI assistant that helps people with their questions and tasks.",
)
CASE_SHARE = 0.3  # chance that an eligible word is recased
WHITESPACE_SHARE = 0.3  # chance that a whitespace run is changed

_DIRECTION_WORDS = ("ascending", "descending", "largest", "smallest", "biggest")
CONTENT_WORDS = frozenset(w.casefold() for w in (
    *tasks.WORDS, *tasks.NOUNS, *(unit for big, small, _ in tasks.UNITS for unit in (big, small)), *_DIRECTION_WORDS))

_SPANS = (
    re.compile(r'"[^"]*"'),
    re.compile("\u201c[^\u201d]*\u201d"),
    re.compile(r"(?<![A-Za-z0-9])'[^'\n]*'(?![A-Za-z0-9])"),
    re.compile(r"<<.*?>>", re.S),
    re.compile(r"\{[^{}]*\}"),
    re.compile(r"\[[^\[\]]*\]"),
)
_SHEET = re.compile(r"---.*?(?:---|\Z)", re.S)
_TOKEN = re.compile(r"\S+")
_EDGE = ".,;:!?()\"'\u201c\u201d"
_WORD = re.compile(r"[A-Za-z]{2,}(?:'[A-Za-z]+)?")
_LETTERS = re.compile(r"[A-Za-z]+")
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def check_perturbations(names: str | Iterable[str] | None) -> tuple[str, ...]:
  """Perturbation names (a comma-separated string or a list; None: all of them), checked against PERTURBATIONS."""
  if names is None:
    return PERTURBATIONS
  listed = names.split(",") if isinstance(names, str) else list(names)
  picked = [str(n).strip() for n in listed if str(n).strip()]
  unknown = [n for n in picked if n not in PERTURBATIONS]
  if unknown or not picked:
    raise UserError(f"--perturbations: unknown perturbation {', '.join(map(repr, unknown)) or '(none given)'}; "
                    f"known: {', '.join(PERTURBATIONS)}")
  return tuple(dict.fromkeys(picked))


def chat_of(record: dict) -> list[dict]:
  """The chat without assistant turns: a task record's messages, or an IFEval record's prompt as a user turn."""
  if "messages" in record:
    return [m for m in record["messages"] if m["role"] != "assistant"]
  return [{"role": "user", "content": record["prompt"]}]


def user_text(record: dict) -> str:
  """The text of the record's (last) user turn."""
  return next(m["content"] for m in reversed(chat_of(record)) if m["role"] == "user")


def _with_user_text(chat: list[dict], text: str) -> list[dict]:
  last = max(i for i, m in enumerate(chat) if m["role"] == "user")
  return [{**m, "content": text} if i == last else m for i, m in enumerate(chat)]


def literals(record: dict) -> list[str]:
  """What the verifier checks literally: a task's answer items and end phrase; an IFEval record's kwargs strings."""
  found: list[str] = []
  verifier = record.get("verifier")
  if isinstance(verifier, dict):
    answer = verifier.get("answer")
    if verifier.get("op") == "grounded_qa" and answer == grounded.ABSTENTION:
      answer = None  # an abstention is judged by its meaning, not matched literally
    if isinstance(answer, list):
      found += [str(a) for a in answer]
    elif answer is not None:
      found.append(str(answer))
    found += [verifier["phrase"]] if verifier.get("phrase") else []
  for kwargs in record.get("kwargs") or ():
    for value in (kwargs or {}).values():
      values = value if isinstance(value, list) else [value]
      found += [v for v in values if isinstance(v, str)]
  return [s for s in found if s.strip()]


def protected_spans(record: dict) -> list[tuple[int, int]]:
  """Character spans of the user text that no perturbation edits: quoted and bracketed text, a --- fact sheet, and
  every occurrence of a literal the verifier checks."""
  text = user_text(record)
  spans = [m.span() for pattern in (*_SPANS, _SHEET) for m in pattern.finditer(text)]
  for literal in literals(record):
    start = text.find(literal)
    while start >= 0:
      spans.append((start, start + len(literal)))
      start = text.find(literal, start + 1)
  return sorted(spans)


def protected_words(record: dict) -> frozenset[str]:
  """Words (casefolded) never edited anywhere: the content vocabulary, the words of the verifier's literals and the
  words of a fact sheet."""
  sheets = " ".join(m.group() for m in _SHEET.finditer(user_text(record)))
  extra = {w.casefold() for text in (*literals(record), sheets) for w in _LETTERS.findall(text)}
  return CONTENT_WORDS | extra


def _inside(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
  return any(start < span[1] and span[0] < end for start, end in spans)


def eligible_words(record: dict) -> list[tuple[int, int]]:
  """Spans of the words typos and casing may edit: whitespace-separated tokens whose core (edge punctuation
  stripped) is 2+ letters, outside protected spans and not protected words."""
  text = user_text(record)
  spans, words = protected_spans(record), protected_words(record)
  found = []
  for token in _TOKEN.finditer(text):
    core = token.group().strip(_EDGE)
    if not _WORD.fullmatch(core):
      continue
    start = token.start() + token.group().index(core)
    span = (start, start + len(core))
    if core.casefold() not in words and not _inside(span, spans):
      found.append(span)
  return found


def _replace_spans(text: str, edits: dict[tuple[int, int], str]) -> str:
  for (start, end), new in sorted(edits.items(), reverse=True):
    text = text[:start] + new + text[end:]
  return text


def _keyboard_neighbours() -> dict[str, str]:
  near: dict[str, set[str]] = {}
  for r, row in enumerate(_KEYBOARD_ROWS):
    for i, key in enumerate(row):
      keys = near.setdefault(key, set())
      keys.update(row[j] for j in (i - 1, i + 1) if 0 <= j < len(row))
      for other in (r - 1, r + 1):
        if 0 <= other < len(_KEYBOARD_ROWS):
          keys.update(_KEYBOARD_ROWS[other][j] for j in (i - 1, i, i + 1) if 0 <= j < len(_KEYBOARD_ROWS[other]))
  return {k: "".join(sorted(v)) for k, v in near.items()}


_NEIGHBOURS = _keyboard_neighbours()


def _typo(rng: random.Random, word: str) -> str:
  """One character edit of a word's letters: swap two adjacent, drop one, double one or hit a neighbouring key."""
  letters = [i for i, ch in enumerate(word) if ch.isalpha()]
  kind = rng.choice(("swap", "drop", "duplicate", "neighbour"))
  if kind == "swap":
    pairs = [i for i in letters if i + 1 in letters and word[i].lower() != word[i + 1].lower()]
    if pairs:
      i = rng.choice(pairs)
      return word[:i] + word[i + 1] + word[i] + word[i + 2:]
  if kind == "drop" and len(letters) >= 3:
    i = rng.choice(letters)
    return word[:i] + word[i + 1:]
  if kind == "neighbour":
    i = rng.choice(letters)
    key = rng.choice(_NEIGHBOURS[word[i].lower()])
    return word[:i] + (key.upper() if word[i].isupper() else key) + word[i + 1:]
  i = rng.choice(letters)
  return word[:i] + word[i] + word[i:]


def _edited_word(rng: random.Random, word: str, protected: frozenset[str]) -> str:
  """A typo of `word` that differs from it and does not spell a protected word."""
  for _ in range(50):
    edited = _typo(rng, word)
    if edited != word and edited.casefold() not in protected:
      return edited
  return word[0] + word  # a doubled first letter: never a word of the vocabulary here


def stochastic_count(rng: random.Random, expected: float) -> int:
  """floor(expected), plus one with probability equal to its fractional part: the mean is exactly `expected`."""
  whole = math.floor(expected)
  return whole + (rng.random() < expected - whole)


def _typos(rng: random.Random, record: dict, rate: float) -> str | None:
  text, eligible = user_text(record), eligible_words(record)
  count = stochastic_count(rng, rate * len(eligible))
  if count == 0:
    return None
  protected = protected_words(record)
  return _replace_spans(text, {s: _edited_word(rng, text[s[0]:s[1]], protected)
                               for s in rng.sample(eligible, count)})


def _recased(rng: random.Random, word: str) -> str:
  return rng.choice((word.upper(), word.lower(), word.capitalize()))


def _case(rng: random.Random, record: dict) -> str | None:
  text, eligible = user_text(record), eligible_words(record)
  if not eligible:
    return None
  edits = {}
  for span in eligible:
    word = text[span[0]:span[1]]
    if rng.random() < CASE_SHARE:
      recased = _recased(rng, word)
      if recased != word:
        edits[span] = recased
  if not edits:
    span = rng.choice(eligible)
    word = text[span[0]:span[1]]
    edits[span] = word.lower() if word.isupper() else word.upper()
  return _replace_spans(text, edits)


def _respaced(rng: random.Random, run: str) -> str:
  """Another whitespace run: newlines collapsed or added, spaces doubled or broken onto a new line."""
  options = (" ", "\n", "\n\n\n") if "\n" in run else ("  ", "   ", "\n", " \n", "\n\n")
  return rng.choice([o for o in options if o != run])


def _whitespace(rng: random.Random, record: dict) -> str | None:
  text, spans = user_text(record), protected_spans(record)
  runs = [m.span() for m in re.finditer(r"\s+", text)
          if 0 < m.start() and m.end() < len(text) and not _inside(m.span(), spans)]
  if not runs:
    return None
  edits = {run: _respaced(rng, text[run[0]:run[1]]) for run in runs if rng.random() < WHITESPACE_SHARE}
  if not edits:
    run = rng.choice(runs)
    edits[run] = _respaced(rng, text[run[0]:run[1]])
  return _replace_spans(text, edits)


def _parts(record: dict) -> dict | None:
  """The record's prompt_parts when they rebuild its prompt, else None."""
  parts = record.get("prompt_parts")
  if not isinstance(parts, dict) or not parts.get("sentences") or tasks.join_prompt(parts) != user_text(record):
    return None
  return parts


def _reworded(rng: random.Random, record: dict) -> str | None:
  parts = _parts(record)
  if parts is None:
    return None
  sentences = []
  for sentence in parts["sentences"]:
    others = [i for i in range(len(tasks.phrasings_of(sentence))) if i != sentence["phrasing"]]
    sentences.append(tasks.phrase_sentence(sentence, rng.choice(others), parts["fill"]))
  return tasks.join_prompt({**parts, "sentences": sentences})


def _reordered(rng: random.Random, record: dict) -> str | None:
  parts = _parts(record)
  if parts is None:
    return None
  texts = [s["text"] for s in parts["sentences"]]
  shuffled = rng.sample(texts, len(texts))
  if len(texts) > 1 and shuffled == texts:
    shuffled = texts[1:] + texts[:1]
  return " ".join([*shuffled, parts["task"]])


_TEXT_EDITS = {"case": _case, "whitespace": _whitespace, "reworded": _reworded, "reordered": _reordered}


def perturb(record: dict, name: str, seed: int) -> dict | None:
  """The perturbed model input {"messages", "template"} for a task or IFEval record, or None where `name` does not
  apply (a typo draw that edits no word, no prompt_parts to reword or reorder, a chat that already has a system
  turn)."""
  check_perturbations([name])
  chat, text = chat_of(record), user_text(record)
  rng = random.Random(f"itjax-perturb:{seed}:{name}:{text}")
  if name == "system":
    if any(m["role"] == "system" for m in chat):
      return None
    return {"messages": [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}, *chat], "template": True}
  if name == "plain_template":
    return {"messages": [{"role": "user", "content": text}], "template": False}
  if name in TYPO_RATES:
    changed = _typos(rng, record, TYPO_RATES[name])
  else:
    changed = _TEXT_EDITS[name](rng, record)
  return None if changed is None else {"messages": _with_user_text(chat, changed), "template": True}
