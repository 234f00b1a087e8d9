"""The summary of an experiment with SEEDS: per arm, the mean over its seeds with a 95% interval, and its paired
difference to the control arm with an interval and a p-value (itjax.sweep.stats), from each run's figures and the
per-example verdicts its evaluations kept (WORKDIR/evals/STEP/SUITE.jsonl in training, WORKDIR/eval/SUITE.jsonl of
the sweep's `itjax eval`).

  summary.csv  one row per arm (and the base): METRIC, METRIC_lo, METRIC_hi, METRIC_diff, METRIC_diff_lo,
               METRIC_diff_hi, METRIC_p for each metric
  runs.csv     one row per run (seed): its figures
  summary.md   the same as tables, what each interval is over, the keys each arm changes
  summary.png  per metric, each arm's mean with its interval (the control's highlighted, the base dashed)
"""

from __future__ import annotations

import os

from etils import epath

from itjax.evals import items as items_lib
from itjax.sweep import stats
from itjax.sweep.experiment import BASE, Experiment, flag_value, run_dir
from itjax.sweep.report import json_lines, save_png, write_csv

COLUMNS = ("", "_lo", "_hi", "_diff", "_diff_lo", "_diff_hi", "_p")


def _rows_of(path: epath.Path, subject: str | None = None) -> list[dict]:
  if not path.exists():
    return []
  return [r for r in json_lines(path) if subject is None or r.get("subject", subject) == subject]


def _steps(workdir: str) -> list[int]:
  root = epath.Path(workdir) / "evals"
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def verdicts(workdir: str, step: int | None = None) -> dict[str, dict]:
  """{'SUITE/METRIC': {item: (value, weight)}} of a run: its training's evaluation at `step` (default: the last),
  then (step None) its `itjax eval` (WORKDIR/eval), which wins where both hold a metric, as in the run's figures."""
  out: dict[str, dict] = {}
  steps = _steps(workdir)
  folders = [epath.Path(workdir) / "evals" / str(steps[-1] if step is None else step)] if steps else []
  for folder in folders:
    for path in sorted(folder.glob("*.jsonl")) if folder.exists() else []:
      out.update({f"{path.stem}/{m}": t for m, t in items_lib.table(_rows_of(path)).items()})
  evaluated = epath.Path(workdir) / "eval"
  if step is None and evaluated.exists():
    for path in sorted(evaluated.glob("*.jsonl")):
      out.update({f"{path.stem}/{m}": t for m, t in items_lib.table(_rows_of(path, "model")).items()})
  return out


def base_verdicts(experiment: Experiment, runs_dir: str) -> dict[str, dict]:
  """The base's verdicts: the evaluation before the first step of the first run that kept one."""
  for run in experiment.runs:
    workdir = run_dir(runs_dir, experiment, run)
    if 0 in _steps(workdir):
      return verdicts(workdir, 0)
  return {}


def intervals(experiment: Experiment, rows: list[dict], base: dict, base_items: dict, metrics: tuple[str, ...],
              runs_dir: str) -> dict[str, dict[str, stats.Interval | None]]:
  """{arm: {METRIC: Interval, METRIC + '_diff': Interval}} over the finished runs of each arm."""
  tables = {r["run"]: verdicts(run_dir(runs_dir, experiment, r["run"])) for r in rows if r["status"] == "done"}
  by_arm: dict[str, list[dict]] = {arm: [] for arm in experiment.arms}
  for r in rows:
    if r["status"] == "done":
      by_arm[experiment.arm_of(r["run"])].append(r)

  def runs_of(arm: str, metric: str) -> list[stats.Run]:
    out = []
    for r in by_arm[arm]:
      figure = r["figures"].get(metric)
      if isinstance(figure, (int, float)) and not isinstance(figure, bool):
        out.append(stats.Run(r["overrides"]["seed"], float(figure), tables[r["run"]].get(metric) or None))
    return out

  def base_runs(metric: str, seeds: list[int]) -> list[stats.Run]:  # the base, as if run once per seed
    figure = base.get(metric)
    if not isinstance(figure, (int, float)) or isinstance(figure, bool):
      return []
    return [stats.Run(seed, float(figure), base_items.get(metric) or None) for seed in seeds]

  result: dict[str, dict] = {}
  for arm in experiment.arms:
    cells: dict[str, stats.Interval | None] = {}
    for metric in metrics:
      mine = runs_of(arm, metric)
      cells[metric] = stats.arm(mine, key=f"{arm}/{metric}") if mine else None
      theirs = (base_runs(metric, [r.seed for r in mine]) if experiment.control == BASE
                else runs_of(experiment.control, metric))
      if arm != experiment.control and mine and theirs:
        cells[metric + "_diff"] = stats.difference(mine, theirs, key=f"{arm}/{metric}")
    result[arm] = cells
  if base:
    result[BASE] = {m: stats.arm([stats.Run(0, float(base[m]), base_items.get(m) or None)], key=f"base/{m}")
                    for m in metrics if isinstance(base.get(m), (int, float)) and not isinstance(base.get(m), bool)}
  return result


def _num(value, digits: int = 4) -> str:
  if value is None:
    return ""
  return f"{value:.{digits}g}"


def _exact(value) -> str:
  """A figure as the CSV files hold it: enough digits to be checked against a rerun."""
  return _num(value, 8)


def _p(value) -> str:
  if value is None:
    return ""
  return "<0.001" if value < 0.001 else f"{value:.3f}"


def changed_keys(experiment: Experiment) -> dict[str, list[str]]:
  """{arm: the keys whose value differs from the control's} (seed aside; the base's: every override)."""
  control = {} if experiment.control == BASE else experiment.arms[experiment.control]
  out = {}
  for arm, overrides in experiment.arms.items():
    keys = sorted(set(overrides) | set(control))
    out[arm] = [k for k in keys if flag_value(overrides.get(k)) != flag_value(control.get(k))]
  return out


def write(experiment: Experiment, runs_dir: str, rows: list[dict], base: dict, metrics: tuple[str, ...]
          ) -> list[str]:
  """summary.csv, runs.csv, summary.md and summary.png of an experiment with SEEDS; returns their paths."""
  out = epath.Path(runs_dir) / experiment.name
  out.mkdir(parents=True, exist_ok=True)
  cells = intervals(experiment, rows, base, base_verdicts(experiment, runs_dir), metrics, runs_dir)
  changed = changed_keys(experiment)
  keys = sorted({k for arm in experiment.arms for k in changed[arm]})
  done = {arm: [r for r in rows if r["status"] == "done" and experiment.arm_of(r["run"]) == arm]
          for arm in experiment.arms}

  header = ["arm", "seeds", *keys] + [m + c for m in metrics for c in COLUMNS]
  table = []
  for arm in [*experiment.arms, *([BASE] if BASE in cells else [])]:
    seeds = " ".join(str(r["overrides"]["seed"]) for r in done.get(arm, []))
    line = [arm, seeds, *[flag_value(_value(experiment, arm, k)) if arm != BASE else "" for k in keys]]
    for m in metrics:
      a, d = cells[arm].get(m), cells[arm].get(m + "_diff")
      line += [_exact(a.value) if a else "", _exact(a.lo) if a else "", _exact(a.hi) if a else "",
               _exact(d.value) if d else "", _exact(d.lo) if d else "", _exact(d.hi) if d else "",
               _exact(d.p) if d else ""]
    table.append(line)
  write_csv(out / "summary.csv", [header, *table])
  run_header = ["run", "arm", "seed", "status", *metrics, "wall_min", "cpu_min", "step_s"]
  write_csv(out / "runs.csv", [run_header] + [
      [r["run"], experiment.arm_of(r["run"]), r["overrides"].get("seed"), r["status"],
       *[_exact(r["figures"].get(m)) if isinstance(r["figures"].get(m), (int, float)) else "" for m in metrics],
       _num(r["wall_s"] / 60) if r.get("wall_s") else "", _num(r["cpu_s"] / 60) if r.get("cpu_s") else "",
       _num(r["figures"].get("step_s"))] for r in rows])
  md = _markdown(experiment, cells, done, changed, metrics)
  cpu = sum(r.get("cpu_s") or 0.0 for r in rows)
  wall = sum(r.get("wall_s") or 0.0 for r in rows)
  md += f"\nTime: {wall / 3600:.2f} h of runs, {cpu / 3600:.2f} CPU hours (training and evaluation, all runs).\n"
  finished = sorted(r["finished"] for r in rows if r.get("finished"))
  if finished:
    md += f"Runs finished between {finished[0]} and {finished[-1]} UTC.\n"
  where = sorted({(w.get("commit", "?"), w.get("cpu", "?"), w.get("cores", "?"))
                  for r in rows if (w := r.get("where"))})
  if where:
    md += "Ran at " + "; ".join(f"commit {c} on {cpu} ({n} cores)" for c, cpu, n in where) + ".\n"
  (out / "summary.md").write_text(md)
  paths = [os.fspath(out / n) for n in ("summary.md", "summary.csv", "runs.csv")]
  plotted = experiment.plot or tuple(metrics[:4])
  if _plot(out / "summary.png", experiment, cells, plotted):
    paths.append(os.fspath(out / "summary.png"))
  if experiment.scatter and _scatter(out / "summary_scatter.png", experiment, cells):
    paths.append(os.fspath(out / "summary_scatter.png"))
  return paths


def _value(experiment: Experiment, arm: str, key: str):
  """The value of config KEY in an arm's runs: its override, else the base config's."""
  from itjax.sweep.experiment import base_config
  overrides = experiment.overrides(f"{arm}/seed{experiment.seeds[arm][0]}")
  if key in overrides:
    return overrides[key]
  node = base_config(experiment)
  for part in key.split("."):
    node = node[part]
  return node


def _cell(i: stats.Interval | None) -> str:
  if i is None:
    return ""
  if i.lo is None:
    return _num(i.value)
  scale = max(abs(i.value), abs(i.lo), abs(i.hi))  # below 1e-6 of it: the figures' rounding (8 digits), shown as 0
  value, lo, hi = (0.0 if abs(x) < 1e-6 * scale else x for x in (i.value, i.lo, i.hi))
  return f"{_num(value)} [{_num(lo)}, {_num(hi)}]"


def _markdown(experiment: Experiment, cells: dict, done: dict, changed: dict, metrics: tuple[str, ...]) -> str:
  common = " ".join(f"{k}={flag_value(v)}" for k, v in experiment.common.items())
  control = experiment.control
  md = [f"# {experiment.name}", "", f"    itjax sweep {experiment.spec}", "",
        f"Base config {experiment.config}" + (f" with {common}" if common else ""), "",
        f"Control arm: **{control}**" + (" (the base model's evaluation before training, the same for every seed)"
                                          if control == BASE else "") +
        ". Each cell: the mean over the arm's seeds [95% interval]; the difference to the "
        "control pairs seeds by number and examples by item (itjax/sweep/stats.py: examples bootstrapped, seeds "
        "by Student's t; p: two-sided, from the same bootstrap). Intervals of a share of right/wrong verdicts are "
        "cut at 0 and 100 (differences at -100 and 100).", "",
        "## Arms", ""]
  arms = [*experiment.arms, *([BASE] if BASE in cells else [])]
  for arm in experiment.arms:
    what = "the control" if arm == control else ", ".join(
        f"{k}={flag_value(_value(experiment, arm, k))}" for k in changed.get(arm, [])) or "nothing"
    n = len(done.get(arm, []))
    md.append(f"- **{arm}** ({n} seed{'' if n == 1 else 's'} finished): {what}")
  md += ["", "## Mean over seeds [95% interval]", "", "| metric | " + " | ".join(arms) + " |",
         "|" + "---|" * (len(arms) + 1)]
  md += [f"| {m} | " + " | ".join(_cell(cells[arm].get(m)) for arm in arms) + " |" for m in metrics]
  others = [arm for arm in experiment.arms if arm != control]
  md += ["", f"## Difference to {control} [95% interval], p", "", "| metric | " + " | ".join(others) + " |",
         "|" + "---|" * (len(others) + 1)]
  for m in metrics:
    row = []
    for arm in others:
      d = cells[arm].get(m + "_diff")
      row.append(f"{_cell(d)}, p={_p(d.p)}" if d is not None and d.p is not None else _cell(d))
    md.append(f"| {m} | " + " | ".join(row) + " |")
  md += ["", "## What each interval is over", ""]
  groups: dict[str, list[str]] = {}  # what the intervals are over -> the metrics whose intervals are so
  for m in metrics:
    overs = sorted({c.over for arm in experiment.arms if (c := cells[arm].get(m)) is not None})
    said = (', '.join(o or 'nothing (one seed, no per-example verdicts)' for o in overs) or 'no runs') + (
        "; intervals over seeds only: no per-example verdicts" if overs == ["seeds"] else "")
    groups.setdefault(said, []).append(m)
  md += [f"- {', '.join(ms)}: {said}" for said, ms in groups.items()]
  several = {arm: keys for arm, keys in changed.items() if arm != control and len(keys) > 1 and control != BASE}
  if several:
    md += ["", "Arms that change more than one key from the control (their difference is not one key's effect): "
           + "; ".join(f"{arm}: {', '.join(keys)}" for arm, keys in several.items()) + "."]
  md += ["", "Per-seed figures: runs.csv."]
  return "\n".join(md) + "\n"


def _bar(c: stats.Interval):
  """An interval as matplotlib's error bar (distances below and above the value); None without one."""
  return [[c.value - c.lo], [c.hi - c.value]] if c.lo is not None else None


def _plot(path, experiment: Experiment, cells: dict, metrics: tuple[str, ...]) -> bool:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  arms = list(experiment.arms)
  metrics = tuple(m for m in metrics if any(cells[a].get(m) is not None for a in arms))
  if not metrics:
    return False
  fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 1, 3.6), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for x, arm in enumerate(arms):
      c = cells[arm].get(metric)
      if c is None:
        continue
      color = "tab:orange" if arm == experiment.control else "tab:blue"
      ax.errorbar([x], [c.value], yerr=_bar(c), fmt="o", color=color, capsize=4)
    b = cells.get(BASE, {}).get(metric)
    if b is not None:
      ax.axhline(b.value, color="black", linestyle="--", linewidth=1, label="base")
      ax.legend(fontsize=7)
    elif "ratio/" in metric:  # a ratio to the base: the base is 1
      ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="base (ratio 1)")
      ax.legend(fontsize=7)
    ax.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=7)
    ax.set_xlim(-0.5, len(arms) - 0.5)
    ax.set_title(metric, fontsize=9)
  fig.suptitle(f"{experiment.name}: mean over seeds, 95% interval (control: {experiment.control})", fontsize=9)
  save_png(path, fig)
  return True


def _scatter(path, experiment: Experiment, cells: dict) -> bool:
  """Per (X, Y) pair of SCATTER, each arm at its means with both 95% intervals, and the base where it has both."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  pairs = [(x, y) for x, y in experiment.scatter
           if any(cells[a].get(x) is not None and cells[a].get(y) is not None for a in experiment.arms)]
  if not pairs:
    return False
  fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.4), squeeze=False)
  for ax, (x, y) in zip(axes[0], pairs):
    for arm in [*experiment.arms, BASE]:
      cx, cy = cells.get(arm, {}).get(x), cells.get(arm, {}).get(y)
      if cx is None or cy is None:
        continue
      color = "black" if arm == BASE else "tab:orange" if arm == experiment.control else "tab:blue"
      ax.errorbar([cx.value], [cy.value], xerr=_bar(cx), yerr=_bar(cy), fmt="s" if arm == BASE else "o",
                  color=color, capsize=3)
      ax.annotate(arm, (cx.value, cy.value), textcoords="offset points", xytext=(5, 5), fontsize=7)
    ax.set_xlabel(x, fontsize=9)
    ax.set_ylabel(y, fontsize=9)
    ax.grid(alpha=0.3)
  fig.suptitle(f"{experiment.name}: arms' means, 95% intervals (control: {experiment.control})", fontsize=9)
  save_png(path, fig)
  return True
