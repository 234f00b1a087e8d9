"""`itjax curate --report DIR`: report.md and plots of what curation kept and removed.

Plots compare every record read (before) with the records kept (after): prompt and response lengths in characters,
the count per removal reason, and the distribution of the records' `types` (when they carry them) or else of the
first word of their instructions. Every file is written whole (temp file + rename).
"""

from __future__ import annotations

import collections
import os

from itjax.io import atomic
from itjax.curate.curate import REASONS, Curated, Item, normal_words

TOP_CATEGORIES = 20


def categories(items: list[Item]) -> tuple[str, collections.Counter]:
  """('types' or 'first word', counts) for these records: their `types` when any record carries a list of them."""
  if any(isinstance(item.obj.get("types"), list) for item in items):
    return "types", collections.Counter(str(t) for item in items for t in item.obj.get("types") or [])
  first = (normal_words(item.instruction or item.text or "")[:1] for item in items)
  return "first word", collections.Counter(words[0] if words else "(none)" for words in first)


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_lengths(curated: Curated, path: str) -> str:
  """Histograms of prompt and response lengths (characters), before and after."""
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, (label, length) in zip(axes, (("prompt", lambda i: len(i.instruction)),
                                        ("response", lambda i: len(i.response)))):
    before, after = [length(i) for i in curated.items], [length(i) for i in curated.kept]
    span = (min(before), max(before) + 1)
    ax.hist(before, bins=40, range=span, alpha=0.5, label=f"before ({len(before)})")
    ax.hist(after, bins=40, range=span, alpha=0.5, label=f"after ({len(after)})")
    ax.set_xlabel(f"{label} length (characters)")
    ax.set_ylabel("records")
    ax.legend()
  return atomic.save_png(path, fig)


def plot_reasons(summary: dict, path: str) -> str:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(8, 4))
  ax.bar(REASONS, [summary["removed"][r] for r in REASONS])
  ax.set_xticks(range(len(REASONS)), REASONS, rotation=40, ha="right")
  ax.set_ylabel("records removed")
  ax.grid(axis="y", alpha=0.3)
  return atomic.save_png(path, fig)


def plot_categories(curated: Curated, path: str) -> str:
  """The TOP_CATEGORIES most common types (or first words) before, and their counts after."""
  import numpy as np
  plt = _plt()
  what, before = categories(curated.items)
  after = categories(curated.kept)[1] if curated.kept else collections.Counter()
  names = [name for name, _ in before.most_common(TOP_CATEGORIES)]
  fig, ax = plt.subplots(figsize=(8, max(3.0, 0.3 * len(names) + 1)))
  y = np.arange(len(names))
  ax.barh(y - 0.2, [before[n] for n in names], 0.4, label="before")
  ax.barh(y + 0.2, [after[n] for n in names], 0.4, label="after")
  ax.set_yticks(y, names, fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel(f"records by {what}")
  ax.legend()
  return atomic.save_png(path, fig)


def markdown(curated: Curated, inputs: list[str], out: str) -> str:
  summary = curated.summary()
  lines = ["# Curation report", "", f"Inputs: {', '.join(f'`{p}`' for p in inputs)}; output `{out}` "
           f"({curated.fmt}).", "", "| | records |", "|---|---:|", f"| read | {summary['records']} |",
           f"| kept | {summary['kept']} |"]
  lines += [f"| removed: {reason} | {n} |" for reason, n in summary["removed"].items()]
  lines += [""] + [f"- {note}" for note in curated.notes] + ([""] if curated.notes else [])
  lines += ["![lengths](lengths.png)", "", "![removed](removed.png)", "", "![categories](categories.png)", ""]
  return "\n".join(lines)


def write_report(directory: str, curated: Curated, inputs: list[str], out: str) -> str:
  """report.md, lengths.png, removed.png and categories.png in `directory`; returns report.md's path."""
  os.makedirs(directory, exist_ok=True)
  plot_lengths(curated, os.path.join(directory, "lengths.png"))
  plot_reasons(curated.summary(), os.path.join(directory, "removed.png"))
  plot_categories(curated, os.path.join(directory, "categories.png"))
  path = os.path.join(directory, "report.md")

  atomic.write_text(path, lambda f: f.write(markdown(curated, inputs, out)))
  return path
