"""Plots of a training run, drawn from WORKDIR/metrics.jsonl (its lines as training.metrics.MetricsWriter writes them):

  loss.png          the training loss of each logged step, faint, its running mean (a centred window) bold, and the
                    validation loss
  evals.png         the generation suites' headline metrics (config.eval's eval/SUITE/METRIC lines) against the step:
                    a row of small panels per suite, one panel per unit (percentages on a 0-100 axis; KL, perplexity,
                    probe counts, tokens, points each on their own)
  before_after.png  the same metrics at step 0 and at the last step, as grouped horizontal bars per suite and unit,
                    the gains (tasks) first, then the costs (forgetting, rigidity), better green and worse red
                    (`itjax demo` draws it)

Headline metrics leave out breakdowns (a further '/': per type, per perturbation), counts (n_*) and the size of the
forgetting suite's text. Nothing here imports JAX.
"""

from __future__ import annotations

import json
import math
import os

# Units of the metrics that are not percentages, by metric name (in any suite); each unit gets its own panel.
UNITS = {"kl_general": "KL to the base (nats/token)", "kl_tasks": "KL to the base (nats/token)",
         "perplexity": "perplexity of general text", "bits_per_byte": "bits per byte of general text",
         "lost_probes": "probes", "gained_probes": "probes", "net_loss_p": "p (sign test, lost vs gained)",
         "mean_length": "tokens", "mean_response_tokens": "tokens", "mean_new_tokens": "tokens",
         "worst_drop": "points (of accuracy)", "spread": "points (of accuracy)",
         "ttft_s": "seconds", "s_per_prompt": "seconds", "decode_tok_s_b1": "tokens/s", "decode_tok_s_b16": "tokens/s"}
PERCENT = "%"
_NOT_HEADLINE = ("text_bytes", "text_tokens")  # the forgetting suite's text: its size, not a measurement
# Metrics where less is better (the rest: more is better, except NEUTRAL, which has no better side).
LOWER_IS_BETTER = frozenset({"degenerate_rate", "kl_general", "kl_tasks", "perplexity", "bits_per_byte",
                             "lost_probes", "worst_drop", "spread", "refusal_rate", "empty_rate", "fabrication_rate",
                             "false_abstention_rate", "ttft_s", "s_per_prompt", "non_answer_rate", "hack_rate",
                             "newly_non_answer", "newly_degenerate", "loss_rate"})
P_VALUES = frozenset({"net_loss_p", "win_p", "non_answer_change_p", "degenerate_change_p"})
NEUTRAL = frozenset({"mean_length", "mean_response_tokens", "mean_new_tokens", "tie_rate"}) | P_VALUES
# Left out of before_after.png: the base's own score (the same before and after) and p-values, which a bar misreads.
_NOT_BEFORE_AFTER = ("base_correct",) + tuple(sorted(P_VALUES))
# What each suite tells of tuning: its gain, or what the gain cost. Suites are drawn in this order.
SIDES = {"tasks": "gains", "ifeval": "gains", "forgetting": "costs", "rigidity": "costs", "hallucination": "costs",
         "latency": "costs"}
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
          "tab:cyan", "tab:gray")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_PER_ROW = 4  # panels in a row of evals.png; a suite with more units takes more rows


def unit(key: str) -> str | None:
  """The unit of eval/SUITE/METRIC (PERCENT for a percentage), None if it is not a headline metric."""
  parts = key.split("/")
  if len(parts) != 3 or parts[0] != "eval":
    return None
  suite, metric = parts[1], parts[2]
  if metric.startswith("n_") or metric in _NOT_HEADLINE:
    return None
  if metric in UNITS:
    return UNITS[metric]
  if metric.startswith("mean_") or metric in _not_percent(suite):
    return metric
  return PERCENT


def _not_percent(suite: str) -> frozenset[str]:
  """The suite's own word on which of its metrics are not percentages (Suite.not_percent; none for a suite that is
  not registered here)."""
  from itjax.errors import UserError
  from itjax.evals import registry
  try:
    return registry.get(suite).not_percent
  except UserError:
    return frozenset()


def is_percent(key: str) -> bool:
  """Whether eval/SUITE/METRIC is a headline percentage: not a per-type or per-perturbation breakdown (a further
  '/'), a count (n_*), a mean length (mean_*) or a metric of another unit (UNITS, the suite's Suite.not_percent)."""
  return unit(key) == PERCENT


def read_records(workdir: str) -> list[dict] | None:
  """The lines of WORKDIR/metrics.jsonl (None without the file; a line cut short by a kill is passed over)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  records = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
        records.append(record)
  return records


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _suite_order(suites) -> list[str]:
  order = list(SIDES)
  return sorted(set(suites), key=lambda s: (order.index(s) if s in order else len(order), s))


def _panels(keys) -> list[tuple[str, str, list[str]]]:
  """(suite, unit, [metric, ...]) for the headline metrics among eval/SUITE/METRIC `keys`: suites in SIDES' order,
  each suite's percentages first, metrics in the order met."""
  grouped: dict[tuple[str, str], list[str]] = {}
  for key in keys:
    u = unit(key)
    if u is not None:
      metrics = grouped.setdefault((key.split("/")[1], u), [])
      if key.split("/")[2] not in metrics:
        metrics.append(key.split("/")[2])
  suites = _suite_order(s for s, _ in grouped)
  return sorted(((s, u, m) for (s, u), m in grouped.items()),
                key=lambda p: (suites.index(p[0]), p[1] != PERCENT, p[1]))


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def running_mean(values: list[float], window: int) -> list[float]:
  """The mean of the `window` values centred on each (fewer at the ends: those there are)."""
  half, out = window // 2, []
  for i in range(len(values)):
    part = values[max(0, i - half):i + half + 1]
    out.append(sum(part) / len(part))
  return out


def plot_losses(workdir: str) -> str | None:
  """WORKDIR/loss.png, and WORKDIR/evals.png when the run evaluated generation suites; returns loss.png's path
  (None without metrics.jsonl)."""
  records = read_records(workdir)
  if records is None:
    return None
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(9, 4.5))
  train = [(r["step"], r["loss"]) for r in records if _number(r.get("loss"))]
  if train:
    steps, losses = zip(*train)
    ax.plot(steps, losses, ".-" if len(losses) <= 60 else "-", color="tab:blue", alpha=0.4, linewidth=0.9,
            markersize=4, label="training loss, each logged step")
    if len(losses) >= 5:
      window = max(3, round(math.sqrt(len(losses))) | 1)  # odd: centred
      gaps = sorted(b - a for a, b in zip(steps, steps[1:]))
      every = f", logged every {gaps[len(gaps) // 2]} steps" if gaps and gaps[len(gaps) // 2] > 1 else ""
      ax.plot(steps, running_mean(list(losses), window), "-", color="tab:blue", linewidth=2.2,
              label=f"training loss, running mean of {window} logged steps (centred{every})")
  validation = sorted({r["step"]: r["eval_loss"] for r in records if _number(r.get("eval_loss"))}.items())
  if validation:
    ax.plot(*zip(*validation), "o:", color="tab:orange", linewidth=1.5, markersize=6, label="validation loss")
  ax.set_xlabel("step")
  ax.set_ylabel("loss (nats per target token)")
  ax.grid(alpha=0.3)
  if train or validation:
    ax.legend(fontsize=8)
  ax.set_title(f"loss: {os.path.basename(os.path.normpath(workdir))}", fontsize=10)
  out = os.path.join(workdir, "loss.png")
  fig.savefig(out, dpi=120, bbox_inches="tight")
  plt.close(fig)
  plot_evals(records, os.path.join(workdir, "evals.png"))
  return out


def plot_evals(records: list[dict], out: str) -> str | None:
  """`out` (evals.png): the suites' headline metrics against the step, a row of panels per suite (more rows when it
  has more than _PER_ROW units), one panel per unit; None (nothing written) when the lines hold no suite's metrics."""
  panels = _panels(k for r in records for k in r if _number(r[k]))
  if not panels:
    return None
  rows: list[list[tuple[str, str, list[str]]]] = []
  for suite in _suite_order(p[0] for p in panels):
    mine = [p for p in panels if p[0] == suite]
    rows += [mine[i:i + _PER_ROW] for i in range(0, len(mine), _PER_ROW)]
  columns = max(len(row) for row in rows)
  plt = _pyplot()
  fig, axes = plt.subplots(len(rows), columns, figsize=(3.6 * columns + 0.4, 2.9 * len(rows)), squeeze=False)
  for row, row_axes in zip(rows, axes):
    for ax in row_axes[len(row):]:
      ax.set_visible(False)
    for (suite, u, metrics), ax in zip(row, row_axes):
      for i, metric in enumerate(metrics):
        key = f"eval/{suite}/{metric}"
        points = sorted({r["step"]: r[key] for r in records if _number(r.get(key))}.items())
        ax.plot(*zip(*points), marker=MARKERS[i % len(MARKERS)], color=COLORS[i % len(COLORS)], linewidth=1.4,
                markersize=5, label=metric)
      if u == PERCENT:  # 0 to 100, the names in a band above
        ax.set_ylim(-3, 104 + 11 * math.ceil(len(metrics) / 2))
        ax.set_yticks(range(0, 101, 20))
        ax.axhline(100, color="0.6", linewidth=0.6)
        ax.set_ylabel("%")
      side = f" ({SIDES[suite]})" if suite in SIDES else ""
      ax.set_title(f"{suite}{side}: {'percent' if u == PERCENT else u}", fontsize=9)
      ax.set_xlabel("step", fontsize=8)
      ax.tick_params(labelsize=7)
      ax.grid(alpha=0.3)
      if u == PERCENT:
        ax.legend(fontsize=7, loc="upper center", ncol=2, frameon=False, handlelength=1.5, columnspacing=1.0,
                  borderaxespad=0.2)
      else:
        ax.legend(fontsize=7, loc="best", framealpha=0.6)
  fig.suptitle("generation evaluations during training", fontsize=11)
  fig.tight_layout()
  fig.savefig(out, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return out


def _evals_at(records: list[dict], step: int) -> dict[str, float]:
  return {k: v for r in records if r["step"] == step for k, v in r.items() if k.startswith("eval/") and _number(v)}


def _verdict(metric: str, delta: float) -> str:
  """'better', 'worse' or 'same' (also for a metric with no better side)."""
  if delta == 0 or metric in NEUTRAL:
    return "same"
  return "better" if (delta < 0) == (metric in LOWER_IS_BETTER) else "worse"


def _fmt(value: float, scale: float, sign: bool = False) -> str:
  """One decimal for figures of `scale` 10 and more (and percentages), else three significant digits."""
  return f"{value:{'+' if sign else ''}{'.1f' if abs(scale) >= 10 else '.3g'}}"


def _bars(ax, suite: str, u: str, metrics: list[str], before: dict, after: dict, colors: dict) -> None:
  """One panel: a pair of bars per metric (before above, after below), each pair labelled 'before -> after (change)'."""
  bar, top = 0.38, 0.0
  for i, metric in enumerate(metrics):
    a, b = after[f"eval/{suite}/{metric}"], before.get(f"eval/{suite}/{metric}")
    verdict = _verdict(metric, a - b) if b is not None else "same"
    y = len(metrics) - 1 - i  # the first metric on top
    if b is not None:
      ax.barh(y + bar / 2, b, height=bar, color="0.78", edgecolor="0.45", linewidth=0.6)
      scale = 100.0 if u == PERCENT else max(abs(a), abs(b))
      change = "no change" if a == b else f"{_fmt(a - b, scale, sign=True)}{' points' if u == PERCENT else ''}"
      text = f"{_fmt(b, scale)} \u2192 {_fmt(a, scale)}  ({change})"
    else:
      text = f"{_fmt(a, 100.0 if u == PERCENT else a)} (not at step 0)"
    ax.barh(y - bar / 2 if b is not None else y, a, height=bar, color=colors[verdict], alpha=0.9)
    ax.annotate(text, (max(a, b or 0.0, 0.0), y), xytext=(5, 0), textcoords="offset points", va="center",
                fontsize=8, color=colors[verdict] if verdict != "same" else "black")
    top = max(top, a, b or 0.0)
  ax.set_yticks(range(len(metrics)), list(reversed(metrics)), fontsize=9)
  ax.set_ylim(-0.65, len(metrics) - 0.35)
  if u == PERCENT:
    ax.set_xlim(0, 150)  # room on the right for the figures
    ax.set_xticks(range(0, 101, 25))
  else:
    ax.set_xlim(min(0.0, *[after[f"eval/{suite}/{m}"] for m in metrics]), (top or 1.0) * 1.9)
  ax.tick_params(axis="x", labelsize=7)
  ax.grid(axis="x", alpha=0.3)
  side = SIDES.get(suite, "")
  ax.set_title(f"{suite}{f' ({side})' if side else ''}: {'percent' if u == PERCENT else u}", fontsize=9, loc="left",
               fontweight="bold" if u == PERCENT else "normal")


def plot_before_after(workdir: str, out_path: str) -> str | None:
  """`out_path`: each suite's headline metrics at step 0 (before tuning) and at the last step of WORKDIR/
  metrics.jsonl's eval/SUITE/METRIC lines, as grouped horizontal bars: per suite, gains first, a full-width panel of
  its percentages, then its other units' panels two to a row. The after bar and its change are green when better,
  red when worse, blue when neither side is better. Returns out_path, or None (nothing written) when the run has no
  suite's metrics after step 0."""
  records = read_records(workdir) or []
  steps = sorted({r["step"] for r in records if any(k.startswith("eval/") and _number(v) for k, v in r.items())})
  last = steps[-1] if steps else 0
  if last == 0:
    return None
  before, after = _evals_at(records, 0), _evals_at(records, last)
  panels = [(s, u, [m for m in ms if m not in _NOT_BEFORE_AFTER]) for s, u, ms in _panels(after)]
  panels = [p for p in panels if p[2]]
  if not panels:
    return None
  rows: list[list[tuple[str, str, list[str]]]] = []  # a suite's percentages alone, its other units in pairs
  for suite in _suite_order(p[0] for p in panels):
    mine = [p for p in panels if p[0] == suite]
    wide = [p for p in mine if p[1] == PERCENT]
    rest = [p for p in mine if p[1] != PERCENT]
    rows += [[p] for p in wide] + [rest[i:i + 2] for i in range(0, len(rest), 2)]
  heights = [max(len(p[2]) for p in row) + 1.3 for row in rows]
  colors = {"better": "tab:green", "worse": "tab:red", "same": "tab:blue"}
  plt = _pyplot()
  fig = plt.figure(figsize=(11, 0.36 * sum(heights) + 1.0), layout="constrained")
  grid = fig.add_gridspec(len(rows), 2, height_ratios=heights)
  for r, row in enumerate(rows):
    spots = [grid[r, :]] if len(row) == 1 and row[0][1] == PERCENT else [grid[r, 0], grid[r, 1]]
    for panel, spot in zip(row, spots):
      _bars(fig.add_subplot(spot), *panel, before, after, colors)
  from matplotlib.patches import Patch
  handles = [Patch(facecolor="0.78", edgecolor="0.45", label="before (step 0)"),
             Patch(color=colors["better"], label="after: better"), Patch(color=colors["worse"], label="after: worse"),
             Patch(color=colors["same"], label="after: no better side (a length, ties)")]
  fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
  fig.suptitle(f"before tuning (step 0) and after {last} steps: {os.path.basename(os.path.normpath(workdir))}",
               fontsize=11)
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path
