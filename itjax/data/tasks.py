"""Verifiable instruction-following tasks: a content operation with a computed answer plus formatting constraints.

Each record is a user instruction, the assistant response computed for it, the task types it combines and the
JSON-serialisable kwargs with which `verify` checks any response (a model's too) for every constraint and the answer.
Type ids belong to groups, so single types or whole groups can be held out of training to test composition.
Every constraint has several phrasings, and each record keeps the parts its prompt was joined from
(`prompt_parts`), so that the prompt can be reworded or reordered without changing what the verifier checks.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import random
from collections import Counter
from typing import Callable, Iterable

from itjax.data import grounded
from itjax.data import noise as noise_lib
from itjax.data.phrasings import (FORMATS, PHRASING_MODES, as_format, check_phrasings, default_form, drawn_sentence,
                                  join_prompt, phrase_sentence, phrasings_of)
from itjax.data.verify import CASES, LAYOUTS, LIST_LAYOUTS, render, verify
from itjax.errors import UserError
from itjax.io import atomic

__all__ = ["TYPES", "DEFAULT_HOLDOUT", "PHRASING_MODES", "make_task", "render", "verify", "expand_holdout",
           "make_splits", "write_splits", "join_prompt", "phrasings_of", "phrase_sentence"]

WORDS = (
    "apple", "banana", "cherry", "dragon", "eagle", "forest", "garden", "harbor", "island", "jacket", "kettle",
    "lemon", "meadow", "needle", "orange", "pencil", "quartz", "river", "silver", "tiger", "umbrella", "valley",
    "window", "yellow", "zebra", "anchor", "basket", "candle", "desert", "engine", "falcon", "guitar", "hammer",
    "igloo", "jungle", "kitten", "ladder", "mirror", "nectar", "oyster", "planet", "rocket", "saddle", "tunnel",
    "violet", "walnut", "bridge", "cloud", "marble", "pepper", "spider", "thunder", "velvet", "wagon", "copper")
NOUNS = ("apples", "books", "chairs", "birds", "coins", "lamps", "stones", "tickets", "boxes", "shells")
SUBJECTS = ("A shop", "The museum", "My neighbour", "The school", "A farmer", "The library")
VERBS = ("sold", "counted", "bought", "ordered", "collected", "received")
UNITS = (("kilometres", "metres", 1000), ("kilograms", "grams", 1000), ("hours", "minutes", 60),
         ("metres", "centimetres", 100))
END_PHRASES = ("Is there anything else I can help with?", "Hope this helps.", "Let me know if you have more questions.",
               "That is all.")
_MAX_TRIES = 10_000


@dataclasses.dataclass(frozen=True)
class Op:
  """A content operation: its group, answer kind ('list', 'int' or 'str') and how to draw a prompt, its answer and
  its input (the data the prompt asks about, without the instruction: what a task-name prompt shows)."""
  group: str
  kind: str
  letters: bool  # the answer has letters, so a case modifier changes it
  title: str
  noun: str  # what a bare scalar answer is called in the instruction
  make: Callable[[random.Random], tuple[str, list | int | str, str]]


OPS: dict[str, Op] = {}


def _op(name: str, group: str, kind: str, title: str, letters: bool = False, noun: str = "number"):
  def register(make):
    OPS[name] = Op(group, kind, letters, title, noun, make)
    return make
  return register


def _listing(rng: random.Random, values) -> str:
  return rng.choice((", ", " ")).join(str(v) for v in values)


@_op("sort_words", "order", "list", "Sorted Words", letters=True)
def _sort_words(rng):
  words = rng.sample(WORDS, rng.randint(4, 7))
  text = rng.choice(("Sort these words alphabetically: {}.", "Put the following words in alphabetical order: {}.",
                     "Arrange these words from A to Z: {}."))
  listing = _listing(rng, words)
  return text.format(listing), sorted(words), listing


@_op("reverse_words", "order", "list", "Reversed Words", letters=True)
def _reverse_words(rng):
  words = rng.sample(WORDS, rng.randint(3, 7))
  text = rng.choice(("Reverse the order of these words: {}.", "List these words from last to first: {}.",
                     "Write the following words in reverse order: {}."))
  listing = _listing(rng, words)
  return text.format(listing), words[::-1], listing


@_op("sort_numbers", "order", "list", "Sorted Numbers")
def _sort_numbers(rng):
  numbers = rng.sample(range(1, 1000), rng.randint(4, 7))
  descending = rng.random() < 0.5
  order = rng.choice(("in descending order", "from largest to smallest") if descending else
                     ("in ascending order", "from smallest to largest"))
  text = rng.choice(("Sort these numbers {}: {}.", "Order the following numbers {}: {}."))
  listing = _listing(rng, numbers)
  return (text.format(order, listing), sorted(numbers, reverse=descending),
          f"{'descending' if descending else 'ascending'}: {listing}")


@_op("dedupe", "text", "list", "Unique Words", letters=True)
def _dedupe(rng):
  unique = rng.sample(WORDS, rng.randint(3, 5))
  words = unique + rng.choices(unique, k=rng.randint(2, 4))
  rng.shuffle(words)
  text = rng.choice(("Remove the duplicates from this list, keeping the first occurrence of each word: {}.",
                     "Write each word of this list once, in the order it first appears: {}."))
  listing = _listing(rng, words)
  return text.format(listing), list(dict.fromkeys(words)), listing


@_op("extract_numbers", "text", "list", "Numbers Found")
def _extract_numbers(rng):
  numbers = [rng.randint(1, 999) for _ in range(rng.randint(3, 5))]
  counted = [f"{n} {noun}" for n, noun in zip(numbers, rng.sample(NOUNS, len(numbers)))]
  sentence = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {', '.join(counted[:-1])} and {counted[-1]}."
  text = rng.choice(('List the numbers that appear in this sentence, in order: "{}"',
                     'Extract every number from the following sentence in the order they appear: "{}"'))
  return text.format(sentence), numbers, sentence


@_op("acronym", "text", "str", "Acronym", letters=True, noun="acronym")
def _acronym(rng):
  words = rng.sample(WORDS, rng.randint(3, 5))
  text = rng.choice(('Form an acronym from the first letters of the words in "{}".',
                     'What is the acronym (the initial letters) of the phrase "{}"?'))
  return text.format(" ".join(words)), "".join(w[0] for w in words).upper(), " ".join(words)


@_op("count_letter", "count", "int", "Letter Count")
def _count_letter(rng):
  words = rng.sample(WORDS, rng.randint(3, 6))
  letter = rng.choice("".join(words))
  text = rng.choice(("How many times does the letter '{}' appear in these words: {}?",
                     "Count the occurrences of the letter '{}' in: {}."))
  listing = _listing(rng, words)
  return text.format(letter, listing), "".join(words).count(letter), f"{letter}: {listing}"


@_op("word_count", "count", "int", "Word Count")
def _word_count(rng):
  words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
  text = rng.choice(('How many words are in the following text: "{}"?', 'Count the words in "{}".'))
  return text.format(" ".join(words)), len(words), " ".join(words)


@_op("max_number", "count", "int", "Largest Number")
def _max_number(rng):
  numbers = rng.sample(range(1, 1000), rng.randint(4, 8))
  text = rng.choice(("What is the largest of these numbers: {}?", "Which of the following numbers is the biggest: {}?"))
  listing = _listing(rng, numbers)
  return text.format(listing), max(numbers), listing


@_op("arithmetic", "math", "int", "Result")
def _arithmetic(rng):
  a, b, c = (rng.randint(2, 50) for _ in range(3))
  form = rng.randrange(3)
  if form == 0:
    return rng.choice(("Compute {} + {} * {}.", "What is {} + {} * {}?")).format(a, b, c), a + b * c, \
        f"{a} + {b} * {c}"
  if form == 1:
    return rng.choice(("Compute {} * {} - {}.", "What is {} * {} - {}?")).format(a, b, c), a * b - c, \
        f"{a} * {b} - {c}"
  numbers = [rng.randint(1, 200) for _ in range(rng.randint(3, 6))]
  listing = _listing(rng, numbers)
  return f"What is the sum of {listing}?", sum(numbers), f"sum: {listing}"


@_op("unit_convert", "math", "int", "Converted Value")
def _unit_convert(rng):
  big, small, factor = rng.choice(UNITS)
  value = rng.randint(2, 250)
  text = rng.choice(("Convert {} {} to {}.", "How many {2} are there in {0} {1}?"))
  return text.format(value, big, small), value * factor, f"{value} {big} -> {small}"


@_op("date_add", "math", "str", "New Date", noun="date")
def _date_add(rng):
  start = datetime.date(2000, 1, 1) + datetime.timedelta(days=rng.randint(0, 30 * 365))
  days = rng.randint(1, 500)
  text = rng.choice(("What date is {} days after {}? Use the YYYY-MM-DD format.",
                     "Add {} days to the date {} and give the result as YYYY-MM-DD."))
  return (text.format(days, start.isoformat()), (start + datetime.timedelta(days=days)).isoformat(),
          f"{start.isoformat()} + {days} days")


@_op("grounded_qa", "grounded", "str", "Answer", letters=True, noun="answer")
def _grounded_qa(rng):
  """A question about an invented fact sheet; half the time the sheet does not hold the answer, and the reply
  is then grounded.ABSTENTION (verify judges these bodies with grounded.judge)."""
  question = grounded.make_question(rng, rng.random() < 0.5)
  return question["prompt"], question["answer"], question["prompt"]  # the sheet and the question are its input


MODIFIERS = ("lowercase", "uppercase", "title", "end_phrase", "no_commas", "quotes")
CONSTRAINTS = {"bullets": "structure", "numbered": "structure", "paragraphs": "structure", "json": "structure",
               "lowercase": "case", "uppercase": "case", "title": "wrap", "quotes": "wrap",
               "end_phrase": "punctuation", "no_commas": "punctuation"}
TYPES: dict[str, str] = {**{name: op.group for name, op in OPS.items()}, **CONSTRAINTS}

# Held out: one op, one layout and one modifier, each a close sibling of a seen type (max_number ~ sort_numbers
# descending, numbered ~ bullets, uppercase ~ lowercase), so held-out records test composing familiar skills.
# The grounded questions are held out too, so that training on them is an ablation: drop 'grounded' to train on them.
DEFAULT_HOLDOUT = "max_number,numbered,uppercase,grounded"

def _compatible(op: Op, layout: str | None, mods: set[str]) -> bool:
  """Whether every constraint can hold at once for this op's answer."""
  if op.group == "grounded" and layout is not None:  # a grounded answer is a sentence or a value, not items
    return False
  if layout in LIST_LAYOUTS and op.kind != "list":
    return False
  # JSON is the whole response with lowercase keys, and a list in JSON needs commas.
  if layout == "json" and (mods & {"quotes", "title", "end_phrase", "uppercase"} or
                           (op.kind == "list" and "no_commas" in mods)):
    return False
  cases = mods.intersection(CASES)  # a case modifier needs letters to act on
  return len(cases) < 2 and (not cases or op.letters or bool(mods & {"title", "end_phrase"}))


def _draw_types(rng: random.Random) -> list[str] | None:
  """An op and 0-3 constraints (layout first, then modifiers), or None for an incompatible draw."""
  op = rng.choice(tuple(OPS))
  picked = set(rng.sample(tuple(CONSTRAINTS), rng.choices(range(4), weights=(2, 4, 4, 3))[0]))
  layouts = [c for c in LAYOUTS if c in picked]
  mods = picked.difference(layouts)
  if len(layouts) > 1 or not _compatible(OPS[op], layouts[0] if layouts else None, mods):
    return None
  return [op, *layouts, *(m for m in MODIFIERS if m in mods)]


def make_task(rng: random.Random, allowed: Callable[[list[str]], bool] | None = None, phrasings: str = "one") -> dict:
  """One record; combinations of types for which `allowed(types)` is False are redrawn.

  `phrasings` "one" says every constraint in its phrasing 0, "all" in any of its phrasings. The record's
  `prompt_parts` (task text, constraint sentences in order with their id and phrasing, and the values filled into
  them) rebuild the prompt with `join_prompt`, so that it can be reworded or reordered.
  """
  check_phrasings(phrasings)
  for _ in range(_MAX_TRIES):
    types = _draw_types(rng)
    if types is not None and (allowed is None or allowed(types)):
      break
  else:
    raise UserError("no allowed combination of task types was drawn; is everything held out?")
  op_id, constraints = types[0], types[1:]
  op = OPS[op_id]
  layout = next((c for c in constraints if c in LAYOUTS), None)
  mods = [c for c in constraints if c not in LAYOUTS]
  prompt, answer, task_input = op.make(rng)
  n = len(answer) if isinstance(answer, list) else None
  phrase = rng.choice(END_PHRASES) if "end_phrase" in mods else None
  if phrase and "lowercase" in mods:
    phrase = phrase.lower()
  elif phrase and "uppercase" in mods:
    phrase = phrase.upper()
  keys = (["items"] if n is not None else ["answer"]) if layout == "json" else None
  shape = '{"items": [...]}' if n is not None else '{"answer": ...}'
  fill = {"n": n, "phrase": phrase, "shape": shape, "noun": op.noun}
  sentences = [drawn_sentence(rng, {"id": c}, fill, phrasings) for c in constraints]
  rng.shuffle(sentences)
  if layout is None:
    default = {"id": "default", "form": default_form(n, mods)}
    sentences.insert(0, drawn_sentence(rng, default, fill, phrasings))
  parts = {"task": prompt, "sentences": sentences, "fill": fill, "input": task_input}
  response = render(answer, layout, mods, op.title, phrase or "")
  verifier = {"op": op_id, "answer": answer, "layout": layout, "modifiers": mods, "n": n, "phrase": phrase,
              "keys": keys}
  if op.group == "grounded":  # names the question holds are not values the answer gives
    verifier["question"] = prompt
  return {"messages": [{"role": "user", "content": join_prompt(parts)}, {"role": "assistant", "content": response}],
          "types": types, "verifier": verifier, "prompt_parts": parts}


def expand_holdout(spec: str | Iterable[str]) -> set[str]:
  """Comma-separated type ids or group names -> the set of type ids they name."""
  names = spec.split(",") if isinstance(spec, str) else list(spec)
  groups: dict[str, set[str]] = {}
  for type_id, group in TYPES.items():
    groups.setdefault(group, set()).add(type_id)
  held, unknown = set(), []
  for name in (str(n).strip() for n in names):
    if name in TYPES:
      held.add(name)
    elif name in groups:
      held |= groups[name]
    elif name:
      unknown.append(name)
  if unknown:
    raise UserError(f"unknown task type or group {', '.join(map(repr, unknown))}; known types: "
                    f"{', '.join(TYPES)}; known groups: {', '.join(groups)}")
  return held


def _unanswerable(record: dict) -> bool:
  return record["verifier"]["answer"] == grounded.ABSTENTION


def _draw(stream: str, want: dict, allowed: Callable[[list[str]], bool], phrasings: str, prompts: set[str],
          split: str, kind: Callable[[dict], object] = lambda record: None) -> list[dict]:
  """Records drawn from their own seeded stream until `want` ({kind(record): count}) is met, each with a prompt not
  in `prompts` (which gains it)."""
  rng, records, want = random.Random(stream), [], dict(want)
  for _ in range(100 * sum(want.values()) + _MAX_TRIES):
    if not any(want.values()):
      return records
    record = make_task(rng, allowed, phrasings)
    key = kind(record)
    if want.get(key) and record["messages"][0]["content"] not in prompts:
      want[key] -= 1
      prompts.add(record["messages"][0]["content"])
      records.append(record)
  raise UserError(f"could not draw {sum(want.values())} more distinct {split} records")


def make_splits(n: int, seed: int, holdout: str | Iterable[str] = DEFAULT_HOLDOUT,
                validation_fraction: float = 0.1, phrasings: str = "one", eval_phrasings: str | None = None,
                train_format: str = "instruction", noise: float = 0.0,
                noise_kinds: str | Iterable[str] = noise_lib.KINDS, n_eval: int = 0, n_grounded: int = 0,
                grounded_unanswerable: float = 0.5) -> dict[str, list[dict]]:
  """Train and validation records without held-out types; heldout records combine held-out with seen types.

  Each split draws from its own seeded stream, and no instruction appears twice across the splits. With nothing held out
  the heldout split is empty. `phrasings` is make_task's: "one" or "all" wordings of the constraints; `eval_phrasings`
  those of the validation and heldout splits (None: `phrasings`). `train_format` 'task_name' writes the train split's
  prompts as task names and inputs (phrasings.task_name_prompt), the same records otherwise; evaluation splits keep
  natural-language instructions. `noise` is the share of train records given a response their verifier rejects
  (itjax.data.noise: exactly that share, `noise_kinds` taking turns); the evaluation splits stay clean. `n_eval` > 0
  sets the validation and heldout sizes (else n x validation_fraction), so that training sets of other sizes are scored
  on evaluation splits of the same size. `n_grounded` adds that many grounded questions to the train split, held out or
  not (round(n_grounded x grounded_unanswerable) of them unanswerable, answered with an abstention), drawn after the
  evaluation splits so that these stay as they are.
  """
  if not 0 <= grounded_unanswerable <= 1:
    raise UserError(f"the share of unanswerable grounded questions must be in [0, 1], got {grounded_unanswerable}")
  check_phrasings(phrasings)
  eval_phrasings = eval_phrasings or phrasings
  check_phrasings(eval_phrasings)
  if train_format not in FORMATS:
    raise UserError(f"unknown task prompt format {train_format!r}; known: {', '.join(FORMATS)}")
  held = expand_holdout(holdout)
  extra = n_eval if n_eval > 0 else max(1, round(n * validation_fraction))
  prompts: set[str] = set()

  def draw(split: str, count: int, allowed: Callable[[list[str]], bool]) -> list[dict]:
    return _draw(f"itjax-tasks:{seed}:{split}", {None: count}, allowed,
                 phrasings if split == "train" else eval_phrasings, prompts, split)

  def seen(types: list[str]) -> bool:
    return held.isdisjoint(types)

  def mixed(types: list[str]) -> bool:
    return not seen(types) and not held.issuperset(types)

  def grounded_qa(types: list[str]) -> bool:
    return types[0] == "grounded_qa" and held.isdisjoint(types[1:])

  kinds = noise_lib.parse_kinds(noise_kinds) if isinstance(noise_kinds, str) else tuple(noise_kinds)
  train = draw("train", n, seen)
  splits = {"validation": draw("validation", extra, seen), "heldout": draw("heldout", extra, mixed) if held else []}
  if n_grounded:  # quotas by answerability: True counts the unanswerable ones
    unanswerable = round(n_grounded * grounded_unanswerable)
    train += _draw(f"itjax-tasks:{seed}:grounded", {True: unanswerable, False: n_grounded - unanswerable},
                   grounded_qa, phrasings, prompts, "grounded", _unanswerable)
  train = noise_lib.add_noise(train, noise, seed, kinds)
  return {"train": [as_format(r, train_format) for r in train], **splits}


def write_splits(out_dir: str, n: int, seed: int, holdout: str | Iterable[str] = DEFAULT_HOLDOUT,
                 phrasings: str = "one", eval_phrasings: str | None = None,
                 train_format: str = "instruction", noise: float = 0.0,
                 noise_kinds: str | Iterable[str] = noise_lib.KINDS, n_eval: int = 0, n_grounded: int = 0,
                 grounded_unanswerable: float = 0.5) -> dict[str, str]:
  """Writes train/validation/heldout JSONL files and a tasks.json summary into `out_dir`; returns {split: path}."""
  splits = make_splits(n, seed, holdout, phrasings=phrasings, eval_phrasings=eval_phrasings,
                       train_format=train_format, noise=noise, noise_kinds=noise_kinds, n_eval=n_eval,
                       n_grounded=n_grounded, grounded_unanswerable=grounded_unanswerable)
  os.makedirs(out_dir, exist_ok=True)
  paths = {}
  for split, records in splits.items():
    paths[split] = os.path.join(out_dir, f"{split}.jsonl")
    atomic.write_text(paths[split], lambda f, records=records: f.writelines(
        json.dumps(record, ensure_ascii=False) + "\n" for record in records))
  summary = {"seed": seed, "n": n, "holdout": sorted(expand_holdout(holdout)), "phrasings": phrasings,
             "eval_phrasings": eval_phrasings or phrasings, "train_format": train_format, "noise": noise,
             "grounded": n_grounded, "grounded_unanswerable": grounded_unanswerable,
             "noisy": dict(sorted(Counter(r["noise"] for r in splits["train"] if "noise" in r).items())),
             "sizes": {split: len(records) for split, records in splits.items()},
             "counts": {split: dict(sorted(Counter(t for r in records for t in r["types"]).items()))
                        for split, records in splits.items()}}
  atomic.write_json(os.path.join(out_dir, "tasks.json"), summary)
  return paths
