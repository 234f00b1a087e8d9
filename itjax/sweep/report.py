"""The summary of a sweep: each run's figures (metrics.jsonl, its evaluation's results.json) side by side with the
base's, as runs/NAME/summary.md, summary.csv and summary.png (an experiment with SEEDS is summarised by arm, with
intervals and paired tests, by itjax.sweep.compare); and the files both write."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics

from etils import epath

from itjax.sweep.experiment import TRAIN_METRICS, Experiment, flag_value, read_marker, run_dir

# What training writes once about itself (hooks.Footprint): a summary's metrics may name them.
RUN_FIGURES = ("trainable_params", "total_params", "trainable_share", "step_memory_gb", "step_temp_gb")


def _train_figures(workdir: str) -> tuple[dict, dict]:
  """The run's figures from WORKDIR/metrics.jsonl: final eval_loss and loss, median step time, steps, and the
  generation evaluations that training ran (config.eval) as 'SUITE/METRIC'; those at step 0 are the base's."""
  path = epath.Path(workdir) / "metrics.jsonl"
  figures: dict = {}
  base: dict = {}
  if not path.exists():
    return figures, base
  step_times = []
  for record in json_lines(path):
    for key in TRAIN_METRICS + RUN_FIGURES:
      if key in record:
        figures[key] = record[key]
    evals = {k[len("eval/"):]: v for k, v in record.items() if k.startswith("eval/")}
    (base if record.get("step") == 0 else figures).update(evals)
    if "step_time" in record:
      step_times.append(record["step_time"])
    figures["steps"] = record.get("step", figures.get("steps"))
  if len(step_times) > 1:
    figures["step_s"] = statistics.median(step_times[1:])  # the first logged step includes compiling
  return figures, base


def _eval_figures(workdir: str) -> tuple[dict, dict]:
  """({'SUITE/METRIC': value} of the run's model, the same of its base) from WORKDIR/eval/results.json."""
  path = epath.Path(workdir) / "eval" / "results.json"
  if not path.exists():
    return {}, {}
  suites = json.loads(path.read_text()).get("suites", {})
  model = {f"{s}/{k}": v for s, out in suites.items() for k, v in (out.get("model") or {}).items()}
  base = {f"{s}/{k}": v for s, out in suites.items() for k, v in (out.get("base") or {}).items()}
  return model, base


def default_metrics(rows: list[dict]) -> tuple[str, ...]:
  """eval_loss and loss, then every evaluation metric that is not per type and not a count."""
  seen: list[str] = []
  for row in rows:
    for key in row["figures"]:
      if "/" in key and key.count("/") == 1 and not key.split("/")[1].startswith("n_") and key not in seen:
        seen.append(key)
  return TRAIN_METRICS + tuple(seen)


def collect(experiment: Experiment, runs_dir: str) -> tuple[list[dict], dict]:
  rows, base = [], {}
  for run in experiment.runs:
    workdir = run_dir(runs_dir, experiment, run)
    marker = read_marker(workdir) or {}
    trained, trained_base = _train_figures(workdir)
    model, evaluated_base = _eval_figures(workdir)
    base = base or {**trained_base, **evaluated_base}
    rows.append({"run": run, "status": marker.get("status", "not run"), "overrides": experiment.overrides(run),
                 "wall_s": marker.get("wall_s"), "cpu_s": marker.get("cpu_s"), "figures": {**trained, **model},
                 "where": {k: marker[k] for k in ("commit", "cpu", "cores") if marker.get(k)},
                 "finished": marker.get("finished")})
  return rows, base


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: 1.96).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_interval(values: list[float]) -> tuple[float, float] | None:
  """(mean, half-width of its 95% t-interval) of two or more values; None for fewer."""
  if len(values) < 2:
    return None
  n = len(values)
  t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
  return statistics.fmean(values), t * statistics.stdev(values) / math.sqrt(n)


def seed_groups(experiment: Experiment, rows: list[dict]) -> dict[str, list[dict]]:
  """The finished runs grouped by their overrides other than `seed`, for groups of two or more seeds; a group is
  named by its overrides (the runs' common name before `_seed`, when they share one)."""
  groups: dict[tuple, list[dict]] = {}
  for r in rows:
    if r["status"] == "done" and "seed" in experiment.runs[r["run"]]:
      key = tuple(sorted((k, flag_value(v)) for k, v in experiment.runs[r["run"]].items() if k != "seed"))
      groups.setdefault(key, []).append(r)
  named = {}
  for key, members in groups.items():
    if len({flag_value(experiment.runs[r["run"]]["seed"]) for r in members}) < 2:
      continue
    stems = {r["run"].rsplit("_seed", 1)[0] for r in members}
    named[stems.pop() if len(stems) == 1 else " ".join(f"{k}={v}" for k, v in key) or "(no overrides)"] = members
  return named


def _seed_table(experiment: Experiment, rows: list[dict], base: dict, metrics: tuple[str, ...]) -> list[str]:
  """Markdown lines: per group of seeds, each metric's mean and 95% interval (and the base's figure)."""
  groups = seed_groups(experiment, rows)
  if not groups:
    return []
  lines = ["", "## Over seeds: mean and 95% t-interval", "", "| group | seeds | " + " | ".join(metrics) + " |",
           "|" + "---|" * (len(metrics) + 2)]
  for name, members in groups.items():
    cells = []
    for m in metrics:
      values = [r["figures"][m] for r in members if isinstance(r["figures"].get(m), (int, float))]
      mi = mean_interval(values)
      cells.append(f"{mi[0]:.4g} ± {mi[1]:.3g}" if mi else "")
    lines.append(f"| {name} | {len(members)} | " + " | ".join(cells) + " |")
  if base:
    lines.append("| (base) | | " + " | ".join(_fmt(base.get(m)) for m in metrics) + " |")
  return lines


def _fmt(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4g}"
  return str(value)


def write_summary(experiment: Experiment, runs_dir: str) -> list[str]:
  """runs/NAME/summary.md, summary.csv and summary.png; returns their paths."""
  rows, base = collect(experiment, runs_dir)
  metrics = experiment.metrics or default_metrics(rows)
  keys = sorted({k for r in rows for k in experiment.runs[r["run"]]})  # the keys the runs differ in
  header = ["run", "status", *keys, *metrics, "wall_min", "step_s"]
  table = []
  for r in rows:
    f = r["figures"]
    table.append([r["run"], r["status"], *[_fmt(r["overrides"].get(k)) for k in keys],
                  *[_fmt(f.get(m)) for m in metrics], _fmt(r["wall_s"] / 60 if r["wall_s"] else None),
                  _fmt(f.get("step_s"))])
  if base:
    table.append(["(base)", "", *[""] * len(keys), *[_fmt(base.get(m)) for m in metrics], "", ""])
  out = epath.Path(runs_dir) / experiment.name
  out.mkdir(parents=True, exist_ok=True)
  write_csv(out / "summary.csv", [header, *table])
  common = " ".join(f"{k}={flag_value(v)}" for k, v in experiment.common.items())
  md = [f"# {experiment.name}", "", f"`{experiment.spec}`: {experiment.config}" + (f" with {common}" if common else ""),
        "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  md += ["| " + " | ".join(cells) + " |" for cells in table]
  md += ["", "wall_min: training and evaluation of the run; step_s: median logged step time after the first."]
  md += _seed_table(experiment, rows, base, metrics)
  (out / "summary.md").write_text("\n".join(md) + "\n")
  paths = [os.fspath(out / "summary.md"), os.fspath(out / "summary.csv")]
  plotted = experiment.plot or tuple(metrics[:4])
  if _plot(out / "summary.png", rows, base, plotted, experiment.name):
    paths.append(os.fspath(out / "summary.png"))
  return paths


def _plot(path, rows: list[dict], base: dict, metrics: tuple[str, ...], title: str) -> bool:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  metrics = tuple(m for m in metrics if any(isinstance(r["figures"].get(m), (int, float)) for r in rows))
  if not metrics:
    return False
  fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 1, 3.4), squeeze=False)
  names = [r["run"] for r in rows]
  for ax, metric in zip(axes[0], metrics):
    values = [r["figures"].get(metric) for r in rows]
    ax.bar(range(len(rows)), [v if isinstance(v, (int, float)) else 0 for v in values],
           color=["tab:blue" if r["status"] == "done" else "tab:gray" for r in rows])
    if isinstance(base.get(metric), (int, float)):
      ax.axhline(base[metric], color="black", linestyle="--", linewidth=1, label="base")
      ax.legend(fontsize=7)
    ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=7)
    ax.set_title(metric, fontsize=9)
  fig.suptitle(title, fontsize=10)
  save_png(path, fig)
  return True


# --- files (a runs directory may be a bucket: epath) ---------------------------------------------------------------


def json_lines(path: epath.Path) -> list[dict]:
  """The JSON objects of a JSONL file, lines that do not parse left out (a run killed mid-write)."""
  out = []
  for line in path.read_text().splitlines():
    try:
      out.append(json.loads(line))
    except ValueError:
      continue
  return out


def write_csv(path: epath.Path, rows: list[list]) -> None:
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator="\n").writerows(rows)
  path.write_text(buffer.getvalue())


def save_png(path, fig) -> None:
  import matplotlib.pyplot as plt
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110)
  plt.close(fig)
  epath.Path(path).write_bytes(buffer.getvalue())
