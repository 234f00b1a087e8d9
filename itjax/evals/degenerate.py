"""Degenerate text: a response that repeats itself instead of saying something.

A response is degenerate when it has at least MIN_TOKENS tokens (words and single punctuation marks) and either
  - one n-gram (2 <= n <= 8 tokens) repeated back to back or scattered covers at least half of its tokens
    (occurrences counted without overlap, times n, over the token count), or
  - its zlib compression ratio (UTF-8 bytes / compressed bytes) is at least RATIO_FACTOR times the reference: the
    median ratio of the base model's responses of at least MIN_TOKENS tokens to the same prompts, or
    DEFAULT_REFERENCE_RATIO when there is no base.
Shorter responses are never degenerate: a two-word answer is terse, not broken. Unigrams are not counted, so list
markers and commas repeated between distinct items do not count as repetition.
"""

from __future__ import annotations

import re
import statistics
import zlib
from collections import Counter

from itjax.evals.subject import SuiteOutput

MIN_TOKENS = 16
NGRAM_SIZES = range(2, 9)
COVERAGE = 0.5
RATIO_FACTOR = 2.0
# Above ordinary English: 300- and 800-byte pieces of the default text compress by a median 1.49 and 1.73, so
# with no base the threshold (4.0) flags only text that repeats itself heavily.
DEFAULT_REFERENCE_RATIO = 2.0
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
  return _TOKEN.findall(text.casefold())


def repeat_coverage(text: str) -> float:
  """The largest share of the tokens covered by non-overlapping occurrences of one n-gram (2 <= n <= 8)."""
  toks = tokens(text)
  best = 0.0
  for n in NGRAM_SIZES:
    if 2 * n > len(toks):
      break
    counts = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    gram, count = counts.most_common(1)[0]
    if count < 2 or count * n / len(toks) <= best:
      continue
    covered, i = 0, 0
    while i <= len(toks) - n:  # non-overlapping occurrences, left to right
      if tuple(toks[i:i + n]) == gram:
        covered += n
        i += n
      else:
        i += 1
    best = max(best, covered / len(toks))
  return best


def compression_ratio(text: str) -> float:
  data = text.encode("utf-8")
  return len(data) / len(zlib.compress(data, 9)) if data else 0.0


def reference_ratio(responses: list[str]) -> float:
  """The median compression ratio of the responses long enough to judge, else DEFAULT_REFERENCE_RATIO."""
  ratios = [compression_ratio(r) for r in responses if len(tokens(r)) >= MIN_TOKENS]
  return statistics.median(ratios) if ratios else DEFAULT_REFERENCE_RATIO


def is_degenerate(text: str, reference: float = DEFAULT_REFERENCE_RATIO) -> bool:
  if len(tokens(text)) < MIN_TOKENS:
    return False
  return repeat_coverage(text) >= COVERAGE or compression_ratio(text) >= RATIO_FACTOR * reference


def add_degeneration(outputs: dict[str, SuiteOutput], tokens_key: str = "response_tokens") -> None:
  """Adds `degenerate_rate` (percent) and `mean_length` (generated tokens) to each output's metrics and a
  `degenerate` verdict to its rows, judged against the 'base' output's responses when there is one."""
  base = outputs.get("base")
  reference = reference_ratio([r["response"] for r in base.rows]) if base else DEFAULT_REFERENCE_RATIO
  for output in outputs.values():
    for row in output.rows:
      row["degenerate"] = is_degenerate(row["response"], reference)
    if output.rows:
      output.metrics["degenerate_rate"] = 100.0 * sum(r["degenerate"] for r in output.rows) / len(output.rows)
      if all(tokens_key in r for r in output.rows):
        output.metrics["mean_length"] = sum(r[tokens_key] for r in output.rows) / len(output.rows)
