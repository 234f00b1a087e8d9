"""Per-example verdicts: what lets two runs be compared on the same items, and intervals be drawn over items.

A suite's `itemize(output)` gives each row of its output two fields:

  item     a key naming the example, the same for every model that answers it ('task:PROMPT', 'probe:PROMPT', ...)
  scores   {METRIC: value}: the row's share of each metric it counts in, in the metric's own unit (100 or 0 for a
           percentage), so that METRIC is the mean of its rows' values; where the mean is weighted (KL per answer
           token), `weights` {METRIC: weight} beside it

`means(rows)` recomputes the metrics from the rows (the tests hold every suite to its own figures this way), and
`table(rows)` gives {METRIC: {item: (value, weight)}}, what itjax.sweep.stats resamples.
"""

from __future__ import annotations

from collections import defaultdict


def table(rows: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
  """{METRIC: {item: (value, weight)}} of rows with `item` and `scores`; rows without them are left out. An item
  that scores a metric twice keeps its weighted mean."""
  sums: dict[str, dict[str, list[float]]] = defaultdict(dict)
  for row in rows:
    item, scores = row.get("item"), row.get("scores")
    if item is None or not isinstance(scores, dict):
      continue
    weights = row.get("weights") or {}
    for metric, value in scores.items():
      w = float(weights.get(metric, 1.0))
      acc = sums[metric].setdefault(item, [0.0, 0.0])
      acc[0] += w * float(value)
      acc[1] += w
  return {m: {i: (s / w if w else 0.0, w) for i, (s, w) in items.items()} for m, items in sums.items()}


def means(rows: list[dict]) -> dict[str, float]:
  """{METRIC: weighted mean of its rows' values}: the figures the rows' verdicts give."""
  out = {}
  for metric, items in table(rows).items():
    total = sum(w for _, w in items.values())
    if total:
      out[metric] = sum(v * w for v, w in items.values()) / total
  return out


def pct(flag) -> float:
  return 100.0 if flag else 0.0
