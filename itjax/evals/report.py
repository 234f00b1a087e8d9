"""What `itjax eval` leaves in its output directory, each file written whole or not at all (temp file + rename):

  results.json  {"model": SRC, "base": BASE|null, "suites": {SUITE: {"model": {..}, "base": {..}, "delta": {..}}},
                 "settings": {..}}
  report.md     the same as tables
  SUITE.jsonl   one line per example and evaluated model ("subject": "model" or "base")
  SUITE.png     model vs base bars: per instruction id (ifeval), per task type (tasks), per figure (latency)
"""

from __future__ import annotations

import json
import math
import os

from itjax.io import atomic
from itjax.evals.subject import SuiteOutput


def suite_result(model: dict[str, float], base: dict[str, float] | None) -> dict:
  """{'model', 'base', 'delta'} for one suite; without a base, 'model' alone."""
  if base is None:
    return {"model": model}
  delta = {k: model[k] - base[k] for k in model if k in base and _is_number(model[k]) and _is_number(base[k])}
  return {"model": model, "base": base, "delta": delta}


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v) -> str:
  if v is None:
    return ""
  if isinstance(v, float):
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
  return str(v)


def markdown(results: dict) -> str:
  lines = [f"# itjax eval: {results['model']}", ""]
  if results.get("base"):
    lines += [f"base: {results['base']}", ""]
  for suite, r in results["suites"].items():
    cols = [c for c in ("model", "base", "delta") if c in r]
    lines += [f"## {suite}", ""] + ([f"note: {r['note']}", ""] if r.get("note") else [])
    lines += ["| metric | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for metric in r["model"]:
      lines.append(f"| {metric} | " + " | ".join(_fmt(r[c].get(metric)) for c in cols) + " |")
    lines.append("")
  settings = ", ".join(f"{k}={v}" for k, v in results["settings"].items())
  return "\n".join(lines + [f"settings: {settings}", ""])


def write_rows(out: str, suite: str, outputs: dict[str, SuiteOutput]) -> str:
  path = os.path.join(out, f"{suite}.jsonl")
  atomic.write_text(path, lambda f: f.writelines(
      json.dumps({"subject": label, **row}, ensure_ascii=False) + "\n"
      for label, output in outputs.items() for row in output.rows))
  return path


def plot(out: str, suite: str, outputs: dict[str, SuiteOutput], ylabel: str) -> str | None:
  """Grouped bars, one group per key of the outputs' `bars` and one bar per evaluated model."""
  keys = list(dict.fromkeys(k for o in outputs.values() for k in o.bars))
  if not keys:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  width = 0.8 / len(outputs)
  fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(keys) * len(outputs) + 2), 4.5))
  x = np.arange(len(keys))
  for i, (label, o) in enumerate(outputs.items()):
    ax.bar(x + (i - (len(outputs) - 1) / 2) * width, [o.bars.get(k, 0.0) for k in keys], width, label=label)
  ax.set_xticks(x, keys, rotation=60, ha="right", fontsize=8)
  ax.set_ylabel(ylabel)
  ax.set_title(suite)
  ax.grid(axis="y", alpha=0.3)
  ax.legend()
  path = os.path.join(out, f"{suite}.png")
  return atomic.save_png(path, fig)


def write_results(out: str, results: dict) -> str:
  path = os.path.join(out, "results.json")
  atomic.write_text(os.path.join(out, "report.md"), lambda f: f.write(markdown(results)))
  atomic.write_json(path, results)
  return path
