"""Data files -> tokenized sources for the pipeline, with one report of everything read, used, skipped and cut.

A source spec is `PATH[:WEIGHT]`, several joined by commas: `instructions.jsonl:0.8,text.jsonl:0.2`.
"""

from __future__ import annotations

import dataclasses

from tqdm import tqdm

from itjax.data import encode, formats
from itjax.data.pipeline import Example, Source
from itjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Options:
  """How records become examples (the data part of a training config)."""
  max_len: int = 2048
  length_policy: str = "truncate"  # 'truncate' (keep the prompt, cut the response) or 'drop'
  train_on: str = "all"  # 'all' assistant turns or only the 'last'
  template: str | None = None  # None: the tokenizer's own chat template; else a built-in name or a Jinja string
  format: str | None = None  # None: detected per file
  on_error: str = "raise"  # 'raise' at the first bad record, or 'skip' and count


def parse_sources(spec: str) -> list[tuple[str, float]]:
  """'a.jsonl:0.8,b.jsonl:0.2' -> [('a.jsonl', 0.8), ('b.jsonl', 0.2)]; a missing weight is 1."""
  out = []
  for part in (p.strip() for p in spec.split(",")):
    if not part:
      continue
    path, _, weight = part.rpartition(":")
    try:
      out.append((path, float(weight)) if path else (part, 1.0))
    except ValueError:
      out.append((part, 1.0))
  if not out:
    raise UserError(f"no data files in {spec!r}")
  return out


def encode_records(records: list[formats.Record], tokenizer, options: Options,
                   report: formats.Report, desc: str = "tokenizing") -> list[Example]:
  """Records -> (ids, mask) examples that fit max_len; every skipped or truncated one is counted in `report`."""
  examples = []
  for record in tqdm(records, desc=desc, unit="rec", disable=len(records) < 2000, leave=False):
    try:
      ids, mask = encode.encode_record(tokenizer, record, options.template, options.train_on)
      ids, mask, cut = encode.fit_length(ids, mask, options.max_len, options.length_policy, record.where)
    except formats.DataError as e:
      if options.on_error == "raise":
        raise
      report.skip(e)
      continue
    report.truncated += cut
    report.used += 1
    report.tokens += len(ids)
    report.target_tokens += int(mask.sum())
    examples.append((ids, mask))
  return examples


def drop_types(records: list[formats.Record], types: frozenset[str], report: formats.Report) -> list[formats.Record]:
  """The records that carry none of `types`; each one left out is counted in `report` under every type it carries."""
  kept = []
  for record in records:
    hit = types.intersection(record.types)
    if hit:
      report.left_out += 1
      report.left_out_by_type.update(hit)
    else:
      kept.append(record)
  return kept


def load_sources(spec: str, tokenizer, options: Options = Options(),
                 drop: tuple[str, ...] = (), transform=None) -> tuple[list[Source], formats.Report]:
  """Reads, renders and tokenizes every file of a spec; the report covers them all. Records whose `types` include
  one of `drop` are left out and counted; a type in `drop` that no record carries is an error (a typo, most likely).
  `transform` is read_records' (augmentation)."""
  report = formats.Report()
  sources, present = [], set()
  for path, weight in parse_sources(spec):
    records, _ = formats.read_records(path, options.format, options.on_error, report, transform)
    if drop:
      present.update(*(r.types for r in records))
      records = drop_types(records, frozenset(drop), report)
      if not records:
        raise UserError(f"data.drop_types: it leaves nothing of {path} (types dropped: {', '.join(drop)})")
    sources.append(Source(path, encode_records(records, tokenizer, options, report, desc=path), weight))
  missing = [t for t in drop if not report.left_out_by_type[t]]
  if missing:
    raise UserError(f"data.drop_types: no record of {spec} has type {missing[0]!r}; types present: "
                    f"{', '.join(sorted(present)) or 'none (the records carry no types)'}")
  return sources, report

