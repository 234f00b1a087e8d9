"""`itjax curate`: instruction data in, fewer records out (filters, exact and near dedup, decontamination, selection).

Every input line becomes an `Item` that keeps its JSON object as it stood in the file, its `path:line` and its
conversation. The passes run in a fixed order and each removes a record for the first reason that hits it: filters
(`empty`, `too_short`, `too_long`, `repeats_instruction`), `exact_duplicate`, `near_duplicate`, `contaminated`,
then `not_selected`. Kept records are written unchanged, in input order, in the first input's format; removed ones go
to `OUT.removed.jsonl` with their reason and, for duplicates and contamination, the `path:line` they matched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from tqdm import tqdm

from itjax.io import atomic, jsonl
from itjax.data.formats import FORMAT_KEYS, SHAREGPT_ROLES, DataError, Record, detect_format, to_object, to_record
from itjax.errors import UserError

REASONS = ("exact_duplicate", "near_duplicate", "contaminated", "empty", "too_short", "too_long",
           "repeats_instruction", "not_selected")
DEDUP_KINDS = ("exact", "near")
SELECT_BY = ("random", "quality", "diversity")
SHINGLE_WORDS = 5  # near dedup compares sets of 5-word shingles
NUM_PERM = 128
LSH_MARGIN = 0.1  # LSH looks for candidates this far below the threshold; the true Jaccard decides
_NOT_WORD = re.compile(r"[^\w\s]|_")


@dataclasses.dataclass(frozen=True)
class Options:
  dedup: tuple[str, ...] = DEDUP_KINDS
  near_threshold: float = 0.8
  decontaminate: tuple[str, ...] = ()
  ngram: int = 13
  min_chars: int = 0
  max_tokens: int | None = None
  select: int | None = None
  by: str = "random"
  seed: int = 0
  template: str | None = None  # a built-in chat template instead of the tokenizer's own (for --max_tokens)


@dataclasses.dataclass
class Item:
  """One input record: where it stood, its JSON line and object, its conversation, and why it was removed."""
  where: str
  line: str
  obj: dict
  fmt: str
  messages: list[dict] | None  # None for a text record
  text: str | None
  reason: str | None = None
  matched: str | None = None
  ifd: float | None = None  # the instruction-following difficulty, when --by quality scored it

  def turns(self, role: str) -> list[str]:
    if self.messages is None:
      return [self.text] if role == "assistant" else []
    return [m["content"] for m in self.messages if m["role"] == role]

  @property
  def instruction(self) -> str:
    return "\n".join(self.turns("user"))

  @property
  def response(self) -> str:
    return "\n".join(self.turns("assistant"))

  def remove(self, reason: str, matched: str | None = None) -> None:
    self.reason, self.matched = reason, matched


@dataclasses.dataclass
class Curated:
  items: list[Item]
  fmt: str  # the first input's format, which OUT is written in
  notes: list[str] = dataclasses.field(default_factory=list)

  @property
  def kept(self) -> list[Item]:
    return [item for item in self.items if item.reason is None]

  def summary(self) -> dict:
    removed = dict.fromkeys(REASONS, 0)
    for item in self.items:
      if item.reason is not None:
        removed[item.reason] += 1
    return {"records": len(self.items), "kept": len(self.kept), "removed": removed}


def normal_words(text: str) -> list[str]:
  """Words after case folding, with punctuation, symbols and runs of whitespace all reduced to one space."""
  return _NOT_WORD.sub(" ", text.casefold()).split()


def response_slots(obj: dict, fmt: str) -> list[tuple[dict, str]]:
  """(container, key) of every assistant text in a raw record, in order."""
  if fmt in ("alpaca", "text"):
    return [(obj, "output" if fmt == "alpaca" else "text")]
  if fmt == "prompt_completion" and not isinstance(obj.get("prompt"), list):
    return [(obj, "completion")]
  turns = {"messages": ["messages"], "sharegpt": ["conversations"], "prompt_completion": ["prompt", "completion"]}
  key, role_key = ("value", "from") if fmt == "sharegpt" else ("content", "role")
  slots = []
  for field in turns[fmt]:
    for turn in obj.get(field) if isinstance(obj.get(field), list) else []:
      if isinstance(turn, dict) and SHAREGPT_ROLES.get(turn.get(role_key)) == "assistant":
        slots.append((turn, key))
  return slots


def _is_blank(container: dict, key: str) -> bool:
  return isinstance(container.get(key), str) and not container[key].strip()


def read_items(path: str) -> list[Item]:
  """Every record of one data file; a response that is empty or whitespace only marks the item `empty`."""
  items, fmt = [], None
  for where, line, obj in jsonl.lines(path, "data file"):
    fmt = fmt or detect_format(obj)
    if fmt is None:
      raise DataError(where, "unknown data format", f"keys {sorted(obj)}; expected 'messages', 'conversations', "
                      "'instruction', 'prompt'+'completion' or 'text'")
    blank = [_is_blank(c, k) for c, k in response_slots(obj, fmt)]
    parsed = obj
    if any(blank):  # parse a copy with the blanks filled, then give the turns back their own (blank) text
      parsed = json.loads(line)
      for (container, key), is_blank in zip(response_slots(parsed, fmt), blank):
        container[key] = "-" if is_blank else container[key]
    record = to_record(parsed, fmt, where)
    if any(blank) and record.messages is not None:
      for message, (container, key) in zip([m for m in record.messages if m["role"] == "assistant"],
                                           response_slots(obj, fmt)):
        message["content"] = container[key]
    item = Item(where, line, obj, fmt, record.messages, obj["text"] if record.text is not None else None)
    if any(blank):
      item.remove("empty")
    items.append(item)
  if not items:
    raise DataError(path, "no records", "the file is empty")
  return items


def repeats_instruction(instruction: str, response: str) -> bool:
  """The normalised response is the normalised instruction, or a run of its words at least half its length."""
  said, asked = normal_words(response), normal_words(instruction)
  if not said or not asked or 2 * len(said) < len(asked):
    return False
  return f" {' '.join(said)} " in f" {' '.join(asked)} "


def _token_count(item: Item, tokenizer, template: str | None) -> int:
  if item.messages is None:
    return len(tokenizer.encode(item.text))
  return len(tokenizer.encode_chat(item.messages, add_generation_prompt=False, template=template))


def _pairs(item: Item) -> list[tuple[str, str]]:
  """(user turn, the assistant turn answering it) for every assistant turn that follows a user turn."""
  pairs, asked = [], None
  for m in item.messages or []:
    if m["role"] == "user":
      asked = m["content"]
    elif m["role"] == "assistant" and asked is not None:
      pairs.append((asked, m["content"]))
  return pairs


def apply_filters(items: list[Item], options: Options, tokenizer=None) -> None:
  """Marks `too_short` (an assistant turn under --min_chars), `too_long`, `repeats_instruction` (`empty` is read)."""
  for item in tqdm(items, desc="filters", unit="rec", disable=None, leave=False):
    if item.reason is not None:
      continue
    if min(len(t.strip()) for t in item.turns("assistant")) < options.min_chars:
      item.remove("too_short")
    elif options.max_tokens is not None and _token_count(item, tokenizer, options.template) > options.max_tokens:
      item.remove("too_long")
    elif any(repeats_instruction(asked, said) for asked, said in _pairs(item)):
      item.remove("repeats_instruction")


def _exact_key(item: Item) -> tuple:
  if item.messages is None:
    return (("text", " ".join(normal_words(item.text))),)
  return tuple((m["role"], " ".join(normal_words(m["content"]))) for m in item.messages)


def mark_exact_duplicates(items: list[Item]) -> None:
  """A record whose normalised conversation equals an earlier kept one's is an `exact_duplicate` of it."""
  first = {}
  for item in items:
    if item.reason is None:
      key = _exact_key(item)
      if key in first:
        item.remove("exact_duplicate", first[key].where)
      else:
        first[key] = item


def shingles(item: Item) -> set[str]:
  """Runs of SHINGLE_WORDS normalised words of the whole conversation (all of it when it is shorter)."""
  words = [w for text in item.turns("system") + item.turns("user") + item.turns("assistant")
           for w in normal_words(text)]
  if len(words) <= SHINGLE_WORDS:
    return {" ".join(words)} if words else set()
  return {" ".join(words[i:i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)}


def jaccard(a: set, b: set) -> float:
  return len(a & b) / len(a | b) if a or b else 0.0


def mark_near_duplicates(items: list[Item], threshold: float, seed: int) -> None:
  """MinHash LSH proposes earlier kept records; one whose true shingle Jaccard >= threshold is the match."""
  from datasketch import MinHash, MinHashLSH
  lsh = MinHashLSH(threshold=max(0.05, threshold - LSH_MARGIN), num_perm=NUM_PERM)
  kept: dict[int, tuple[Item, set]] = {}
  for index, item in enumerate(tqdm(items, desc="near dedup", unit="rec", disable=None, leave=False)):
    if item.reason is not None:
      continue
    grams = shingles(item)
    if not grams:
      continue
    minhash = MinHash(num_perm=NUM_PERM, seed=seed % 2**32)
    minhash.update_batch([g.encode("utf-8") for g in sorted(grams)])
    for candidate in sorted(lsh.query(minhash)):
      if jaccard(grams, kept[candidate][1]) >= threshold:
        item.remove("near_duplicate", kept[candidate][0].where)
        break
    else:
      lsh.insert(index, minhash)
      kept[index] = (item, grams)


def _user_texts(obj: dict, where: str) -> list[str]:
  """The prompts of one eval record: IFEval's `prompt`, or the user turns of any data format."""
  fmt = detect_format(obj)
  if isinstance(obj.get("prompt"), str) and fmt in (None, "prompt_completion"):
    return [obj["prompt"]]
  if fmt == "alpaca":
    return [obj["instruction"]] + ([obj["input"]] if obj.get("input") else [])
  if fmt == "text":
    return [obj["text"]]
  turns = {"messages": obj.get("messages"), "sharegpt": obj.get("conversations"),
           "prompt_completion": obj.get("prompt")}.get(fmt)
  if not isinstance(turns, list):
    raise DataError(where, "no prompt in eval record", f"keys {sorted(obj)}; expected 'prompt' or a data format")
  key, role_key = ("value", "from") if fmt == "sharegpt" else ("content", "role")
  return [t[key] for t in turns if isinstance(t, dict) and SHAREGPT_ROLES.get(t.get(role_key)) == "user"
          and isinstance(t.get(key), str)]


def eval_ngrams(paths: tuple[str, ...], n: int, notes: list[str]) -> dict[tuple, str]:
  """Every normalised n-gram of the eval prompts -> the `path:line` of the first prompt holding it."""
  grams, short = {}, 0
  for path in paths:
    for where, _, obj in jsonl.lines(path, "eval file (--decontaminate)"):
      for text in _user_texts(obj, where):
        if not isinstance(text, str):
          raise DataError(where, "non-string prompt in eval record", f"got {type(text).__name__}")
        words = normal_words(text)
        short += len(words) < n
        for i in range(len(words) - n + 1):
          grams.setdefault(tuple(words[i:i + n]), where)
  if short:
    notes.append(f"{short} eval prompts have fewer than --ngram {n} words and were not checked")
  return grams


def mark_contaminated(items: list[Item], grams: dict[tuple, str], n: int) -> None:
  """A record whose instruction or response holds an eval prompt's n-gram is `contaminated`."""
  for item in tqdm(items, desc="decontaminate", unit="rec", disable=None, leave=False):
    if item.reason is not None or not grams:
      continue
    for text in item.turns("user") + item.turns("assistant"):
      words = normal_words(text)
      hit = next((grams[g] for g in (tuple(words[i:i + n]) for i in range(len(words) - n + 1)) if g in grams), None)
      if hit is not None:
        item.remove("contaminated", hit)
        break


def render_as(item: Item, fmt: str) -> str:
  """The record as a JSON line in `fmt`: its own line when already in it, else its conversation plus its other keys."""
  if item.fmt == fmt:
    return item.line
  own = {k: v for k, v in item.obj.items() if k not in FORMAT_KEYS[item.fmt]}
  try:
    return json.dumps({**to_object(Record(item.where, item.messages, item.text), fmt), **own}, ensure_ascii=False)
  except DataError as e:
    raise DataError(item.where, e.reason, "OUT is written in the first input's format") from None


def counts_text(counts: dict[str, int]) -> str:
  """'reason n, ...' of the non-zero counts, or 'none': how curate and distill say what they dropped."""
  return ", ".join(f"{reason} {n}" for reason, n in counts.items() if n) or "none"


def removed_path(out: str) -> str:
  return out[:-len(".jsonl")] + ".removed.jsonl"


def _write_lines(path: str, lines: list[str]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic.write_text(path, lambda f: f.writelines(line + "\n" for line in lines))


def write_outputs(curated: Curated, out: str) -> None:
  """OUT (kept records, input order) and OUT.removed.jsonl (each removed record with where, reason, matched)."""
  kept = [render_as(item, curated.fmt) for item in curated.kept]
  removed = [json.dumps({"where": item.where, "reason": item.reason,
                         **({"matched": item.matched} if item.matched else {}),
                         **({"ifd": item.ifd} if item.ifd is not None else {}),
                         "record": item.obj},
                        ensure_ascii=False) for item in curated.items if item.reason is not None]
  _write_lines(out, kept)
  _write_lines(removed_path(out), removed)


def check_options(inputs: list[str], out: str, options: Options, tokenizer, model=None) -> None:
  if not inputs:
    raise UserError("--data IN[,IN2...]: expected at least one input file")
  if not out.endswith(".jsonl"):
    raise UserError(f"--out {out}: expected a path ending in .jsonl")
  if unknown := [d for d in options.dedup if d not in DEDUP_KINDS]:
    raise UserError(f"--dedup {','.join(unknown)}: expected a comma-separated subset of {','.join(DEDUP_KINDS)}")
  if options.by not in SELECT_BY:
    raise UserError(f"--by {options.by}: expected one of {', '.join(SELECT_BY)}")
  if options.max_tokens is not None and tokenizer is None:
    raise UserError("--max_tokens needs --model SRC (its tokenizer and chat template count the tokens)")
  if options.select is not None and options.select < 1:
    raise UserError(f"--select {options.select}: expected a number of records >= 1")
  if options.select is not None and options.by != "random" and model is None:
    raise UserError(f"--by {options.by} needs --model SRC (the model to be tuned scores the records)")


def check_outputs(inputs: list[str], out: str, options: Options, model: str | None = None, report: str | None = None,
                  overwrite: bool = False) -> None:
  """OUT, OUT.removed.jsonl and the --report directory may be written (before anything is read): each replaced only
  with overwrite, and none of them an input (--data, --model, --decontaminate), in one, or holding one."""
  from itjax.io import outputs
  if not out.endswith(".jsonl"):
    raise UserError(f"--out {out}: expected a path ending in .jsonl")
  reads = [("--data", path) for path in inputs] + [("--model", model)]
  reads += [("--decontaminate", path) for path in options.decontaminate]
  outputs.check(out, "--out", reads=reads + [("--report", report)], overwrite=overwrite)
  outputs.check(removed_path(out), "--out's removed records", reads=reads + [("--report", report)],
                overwrite=overwrite)
  if report:
    outputs.check(report, "--report", reads=reads, overwrite=overwrite, directory=True)


def curate(inputs: list[str], out: str, options: Options = Options(), tokenizer=None, model=None) -> Curated:
  """Reads every input, runs the passes in order, writes OUT and OUT.removed.jsonl; returns what happened.
  `model` (a LoadedModel) is what --by quality and --by diversity score with; its tokenizer serves when
  `tokenizer` is None."""
  tokenizer = tokenizer if tokenizer is not None or model is None else model.tokenizer
  check_options(inputs, out, options, tokenizer, model)
  items = [item for path in inputs for item in read_items(path)]
  curated = Curated(items, items[0].fmt)
  grams = eval_ngrams(options.decontaminate, options.ngram, curated.notes) if options.decontaminate else {}
  apply_filters(items, options, tokenizer)
  if "exact" in options.dedup:
    mark_exact_duplicates(items)
  if "near" in options.dedup:
    mark_near_duplicates(items, options.near_threshold, options.seed)
  if options.decontaminate:
    mark_contaminated(items, grams, options.ngram)
  if options.select is not None:
    from itjax.curate import select as curate_select
    curate_select.select(items, options.select, options.by, options.seed, model, options.template, curated.notes)
  write_outputs(curated, out)
  return curated
