"""Paired changes: the same prompts answered by the base and by the tuned model, compared prompt by prompt.

A rate that stays the same can hide two movements that cancel (the tuned model stops looping on some prompts and
starts on others). For a per-row verdict (`non_answer`, `degenerate`, a probe's `correct`), `changes` counts the
prompts where the verdict appeared (newly_NAME) and where it went away (no_longer_NAME), and gives the two-sided
exact sign test of one count against the other (NAME_change_p): small when the changes go mostly one way.
"""

from __future__ import annotations

import math

# The metrics `changes` adds that are not percentages (counts and p-values), for Suite.not_percent.
NOT_PERCENT = frozenset(f"{prefix}{field}{suffix}" for field in ("non_answer", "degenerate")
                        for prefix, suffix in (("newly_", ""), ("no_longer_", ""), ("", "_change_p")))


def sign_test_p(one: int, other: int) -> float:
  """Two-sided exact sign test (McNemar's exact test) of two counts of changed pairs: the chance of a split at
  least this uneven if each change were as likely to go either way."""
  n, k = one + other, min(one, other)
  if n == 0:
    return 1.0
  return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n)


def changes(model_rows: list[dict], base_rows: list[dict], field: str) -> dict[str, float]:
  """newly_FIELD, no_longer_FIELD and FIELD_change_p of rows aligned by prompt (the same prompts in the same
  order); {} when the rows do not pair up or lack the field."""
  if len(model_rows) != len(base_rows) or not model_rows:
    return {}
  if any(field not in r for r in model_rows + base_rows):
    return {}
  if any(m.get("prompt") != b.get("prompt") for m, b in zip(model_rows, base_rows)):
    return {}
  newly = sum(bool(m[field]) and not b[field] for m, b in zip(model_rows, base_rows))
  gone = sum(bool(b[field]) and not m[field] for m, b in zip(model_rows, base_rows))
  return {f"newly_{field}": float(newly), f"no_longer_{field}": float(gone),
          f"{field}_change_p": sign_test_p(newly, gone)}
