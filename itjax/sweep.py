"""`itjax sweep`: the runs of an experiment file, each in runs/NAME/RUN/, then one summary table and plot.

An experiment file is a Python file with these names (see experiments/):
  CONFIG   the base config, 'configs/X.py[:ARG]' (relative to the current directory or the repository root)
  COMMON   overrides for every run, {'KEY': value} with KEY as in --config.KEY (optional)
  RUNS     {run name: {'KEY': value, ...}}: one run per entry, each its own overrides
  EVAL     flags of `itjax eval` run on each trained run, e.g. {'suites': 'tasks,forgetting', 'limit': 100}
           (optional; the evaluations that training itself runs, config.eval, are read from metrics.jsonl,
           their step-0 figures as the base's; without either, the summary has the final validation loss)
  METRICS  the summary's columns (optional): 'eval_loss', 'loss', 'SUITE/METRIC' of the evaluation
  PLOT     the metrics drawn in summary.png, one panel each (optional: the first four of METRICS)

A run that finished (RUN/sweep.json says so) is skipped when the sweep runs again; a run that failed is reported,
does not stop the others and is tried again next time (training resumes from its last checkpoint).
"""

from __future__ import annotations

import concurrent.futures
import csv
import importlib.util
import io
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from etils import epath

from itjax.errors import InputNotFound, UserError

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")
TRAIN_METRICS = ("eval_loss", "loss")
MARKER = "sweep.json"


@dataclass
class Experiment:
  path: str
  name: str
  config: str  # path[:ARG]
  common: dict
  runs: dict[str, dict]
  eval: dict = field(default_factory=dict)
  metrics: tuple[str, ...] = ()
  plot: tuple[str, ...] = ()

  def overrides(self, run: str) -> dict:
    return {**self.common, **self.runs[run]}


def load(path: str) -> Experiment:
  """Reads and checks an experiment file: every run's overrides are applied to the base config here, so an unknown
  key or a value of the wrong type stops the sweep before anything runs."""
  if not os.path.isfile(path):
    raise InputNotFound(f"{path}: no such experiment file")
  spec = importlib.util.spec_from_file_location("itjax_experiment", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  name = os.path.splitext(os.path.basename(path))[0]
  config = getattr(module, "CONFIG", None)
  if not isinstance(config, str) or not config:
    raise UserError(f"{path}: CONFIG must name the base config, e.g. CONFIG = 'configs/tiny_lora.py'")
  runs = getattr(module, "RUNS", None)
  if not isinstance(runs, dict) or not runs:
    raise UserError(f"{path}: RUNS must be a non-empty dict {{run name: {{config key: value}}}}; "
                    f"got {type(runs).__name__ if runs is not None else 'nothing'}{' (empty)' if runs == {} else ''}")
  common = getattr(module, "COMMON", {}) or {}
  for run, overrides in [("COMMON", common), *runs.items()]:
    if not isinstance(overrides, dict):
      raise UserError(f"{path}: run {run!r}: overrides must be a dict {{config key: value}}, got "
                      f"{type(overrides).__name__}")
    if run != "COMMON" and not RUN_NAME.match(str(run)):
      raise UserError(f"{path}: run name {run!r} must be letters, digits and _.=- (it names a directory)")
  evals = dict(getattr(module, "EVAL", {}) or {})
  if evals and not evals.get("suites"):
    raise UserError(f"{path}: EVAL needs 'suites' (e.g. 'tasks,forgetting'), or leave EVAL out")
  metrics = tuple(getattr(module, "METRICS", ()) or ())
  plot = tuple(getattr(module, "PLOT", ()) or ())
  unknown = [m for m in plot if metrics and m not in metrics]
  if unknown:
    raise UserError(f"{path}: PLOT names {', '.join(unknown)}, which METRICS does not hold")
  experiment = Experiment(path, name, _config_path(config, path), dict(common), dict(runs), evals, metrics, plot)
  base = _base_config(experiment)
  for run in runs:
    apply_overrides(base, experiment.overrides(run), f"{path}: run {run!r}")
  return experiment


def _config_path(config: str, experiment: str) -> str:
  """A relative CONFIG from the current directory, else from the repository root (the experiment's parent's)."""
  path, sep, arg = config.partition(":")
  if not os.path.isabs(path) and not os.path.exists(path):
    beside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(experiment))), path)
    if os.path.exists(beside):
      path = os.path.relpath(beside)
  if not os.path.isfile(path):
    raise InputNotFound(f"{experiment}: CONFIG {config!r}: no such config file")
  return path + sep + arg


def _base_config(experiment: Experiment):
  from itjax.config import from_file
  path, _, arg = experiment.config.partition(":")
  try:
    return from_file(path, arg)
  except ValueError as e:
    raise UserError(f"{experiment.path}: CONFIG {experiment.config!r}: {e}") from None


def apply_overrides(config, overrides: dict, where: str):
  """Sets each dotted KEY of `config` (a copy is not made) as --config.KEY=VALUE would; names the bad key."""
  import difflib
  for key, value in overrides.items():
    node, parts = config, str(key).split(".")
    for depth, part in enumerate(parts):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if part not in keys:
        here = ".".join(parts[:depth])
        near = difflib.get_close_matches(part, keys, n=1)
        hint = f" (did you mean {'.'.join(parts[:depth] + near)!r}?)" if near else ""
        raise UserError(f"{where}: unknown config key {key!r}: {here or 'the config'} has no {part!r}{hint}")
      if depth < len(parts) - 1:
        node = node[part]
    try:
      node[parts[-1]] = _coerce(value, node[parts[-1]])
    except (TypeError, ValueError) as e:
      raise UserError(f"{where}: config key {key!r}: {value!r} does not fit its type "
                      f"({type(node[parts[-1]]).__name__}): {e}") from None
  return config


def _coerce(value, current):
  if isinstance(current, tuple) and isinstance(value, list):
    return tuple(value)
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


def flag_value(value) -> str:
  """VALUE of --config.KEY=VALUE as ml_collections parses it back."""
  if isinstance(value, (tuple, list)):
    items = [json.dumps(v) if isinstance(v, str) else repr(v) for v in value]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
  return value if isinstance(value, str) else repr(value)


def train_args(experiment: Experiment, run: str, workdir: str) -> list[str]:
  return ["train", "--config", experiment.config, "--workdir", workdir] + [
      f"--config.{k}={flag_value(v)}" for k, v in experiment.overrides(run).items()]


def eval_args(experiment: Experiment, workdir: str, out: str | None = None) -> list[str]:
  """`itjax eval` of a trained run into WORKDIR/eval (or `out`: a bucket workdir's results are written locally)."""
  if not experiment.eval:
    return []
  args = ["eval", "--model", workdir, "--out", out or os.path.join(workdir, "eval")]
  for key, value in experiment.eval.items():
    value = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
    args.append(f"--{key}" if value is True else f"--no{key}" if value is False else f"--{key}={value}")
  return args


def shown(args: list[str]) -> str:
  return shlex.join(["itjax"] + args)


# --- running ---------------------------------------------------------------------------------------------------


def run_dir(runs_dir: str, experiment: Experiment, run: str) -> str:
  return os.path.join(runs_dir, experiment.name, run)


def read_marker(workdir: str) -> dict | None:
  path = epath.Path(workdir) / MARKER
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (ValueError, OSError):
    return None


def _write_marker(workdir: str, marker: dict) -> None:
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  (epath.Path(workdir) / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def select(experiment: Experiment, only: list[str] | None) -> list[str]:
  if not only:
    return list(experiment.runs)
  unknown = [r for r in only if r not in experiment.runs]
  if unknown:
    raise UserError(f"--only: {experiment.path} has no run {', '.join(map(repr, unknown))}; its runs: "
                    f"{', '.join(experiment.runs)}")
  return [r for r in experiment.runs if r in only]


def finished(experiment: Experiment, run: str, workdir: str) -> bool:
  marker = read_marker(workdir)
  if not marker or marker.get("status") != "done":
    return False
  if marker.get("overrides") != json.loads(json.dumps(experiment.overrides(run))):
    raise UserError(f"{workdir}: this run finished with other overrides ({marker.get('overrides')}); "
                    f"{experiment.path} now gives {experiment.overrides(run)}: move the directory away or rename "
                    "the run")
  return True


def plan_lines(experiment: Experiment, runs: list[str], runs_dir: str, here: bool = True) -> list[str]:
  """The planned runs with their overrides and commands; `here`: the runs directory is read to mark finished runs
  (not for a slice's, which the sweep on the slice reads)."""
  lines = [f"sweep {experiment.name}: {len(runs)} run(s) of {experiment.config} "
           f"({len(experiment.runs)} in {experiment.path}), into {os.path.join(runs_dir, experiment.name)}"]
  for run in runs:
    workdir = run_dir(runs_dir, experiment, run)
    state = " (finished: skipped)" if here and finished(experiment, run, workdir) else ""
    overrides = " ".join(f"{k}={flag_value(v)}" for k, v in experiment.runs[run].items()) or "(the base config)"
    lines.append(f"{run}{state}: {overrides}")
    lines.append(f"  {shown(train_args(experiment, run, workdir))}")
    if experiment.eval:
      lines.append(f"  {shown(eval_args(experiment, workdir))}")
  return lines


def _itjax(args: list[str]) -> list[str]:
  return [sys.executable, "-m", "itjax.cli"] + args


def _run_one(experiment: Experiment, run: str, workdir: str) -> dict:
  """Trains, then evaluates, with every line of both in WORKDIR/sweep.log; returns the marker written."""
  remote = "://" in workdir
  if remote:  # the log and the evaluation are written locally, copied next to the run at the end
    local = tempfile.mkdtemp(prefix=f"itjax-sweep-{run}-")
    log_path, eval_out = os.path.join(local, "sweep.log"), os.path.join(local, "eval")
  else:
    eval_out = None
    log_path = os.path.join(workdir, "sweep.log")
    os.makedirs(workdir, exist_ok=True)
  started = time.time()
  status, rc, command = "done", 0, None
  with open(log_path, "a") as log:
    for args in (train_args(experiment, run, workdir), eval_args(experiment, workdir, eval_out)):
      if not args:
        continue
      log.write(f"$ {shown(args)}\n")
      log.flush()
      rc = subprocess.call(_itjax(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
      if rc != 0:
        status, command = "failed", args[0]
        break
  if remote:
    for root, _, names in os.walk(local):
      for name in names:
        source = os.path.join(root, name)
        target = epath.Path(workdir) / os.path.relpath(source, local)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(open(source, "rb").read())
  marker = {"status": status, "run": run, "overrides": experiment.overrides(run),
            "wall_s": round(time.time() - started, 1)}
  if status == "failed":
    marker.update(failed=command, exit_code=rc, error=_last_error(log_path))
  _write_marker(workdir, marker)
  return marker


def _last_error(log_path: str) -> str:
  """The log's last line that says what went wrong (an itjax error line, else its last non-empty line)."""
  with open(log_path, errors="replace") as f:
    lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
  for line in reversed(lines):
    if line.startswith("itjax ") and ": " in line:
      return line
  return lines[-1] if lines else "(no output)"


def run_local(experiment: Experiment, runs: list[str], runs_dir: str, parallel: int = 1,
              say=print) -> list[tuple[str, dict]]:
  """Runs what has not finished, `parallel` at a time; returns (run, marker) for the runs started."""
  todo = [r for r in runs if not finished(experiment, r, run_dir(runs_dir, experiment, r))]
  for run in runs:
    if run not in todo:
      say(f"{run}: finished before, skipped")
  lock, done, results, started = threading.Lock(), [0], [], time.time()

  def one(run: str):
    workdir = run_dir(runs_dir, experiment, run)
    with lock:
      say(f"{run}: started (log: {os.path.join(workdir, 'sweep.log')})")
    marker = _run_one(experiment, run, workdir)
    with lock:
      done[0] += 1
      elapsed = time.time() - started
      eta = elapsed / done[0] * (len(todo) - done[0])
      outcome = ("finished" if marker["status"] == "done" else
                 f"FAILED in {marker['failed']} (exit {marker['exit_code']}): {marker['error']}")
      say(f"{run}: {outcome} in {marker['wall_s'] / 60:.1f} min [{done[0]}/{len(todo)} runs, "
          f"{elapsed / 60:.1f} min so far, about {eta / 60:.1f} min to go]")
      results.append((run, marker))

  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
    for future in [pool.submit(one, run) for run in todo]:
      future.result()
  return results


# --- summary ---------------------------------------------------------------------------------------------------


def _train_figures(workdir: str) -> tuple[dict, dict]:
  """The run's figures from WORKDIR/metrics.jsonl: final eval_loss and loss, median step time, steps, and the
  generation evaluations that training ran (config.eval) as 'SUITE/METRIC'; those at step 0 are the base's."""
  path = epath.Path(workdir) / "metrics.jsonl"
  figures: dict = {}
  base: dict = {}
  if not path.exists():
    return figures, base
  step_times = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except ValueError:
      continue
    for key in TRAIN_METRICS:
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
                 "wall_s": marker.get("wall_s"), "figures": {**trained, **model}})
  return rows, base


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
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator="\n").writerows([header, *table])
  (out / "summary.csv").write_text(buffer.getvalue())
  common = " ".join(f"{k}={flag_value(v)}" for k, v in experiment.common.items())
  md = [f"# {experiment.name}", "", f"`{experiment.path}`: {experiment.config}" + (f" with {common}" if common else ""),
        "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  md += ["| " + " | ".join(cells) + " |" for cells in table]
  md += ["", "wall_min: training and evaluation of the run; step_s: median logged step time after the first."]
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
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110)
  plt.close(fig)
  epath.Path(path).write_bytes(buffer.getvalue())
  return True


# --- the command -----------------------------------------------------------------------------------------------


def tpu_command(experiment: Experiment, runs: list[str], runs_dir: str, tpu: str, zone: str, project: str | None,
                dry_run: bool) -> list[str]:
  """`python launch/tpu.py run ...` that starts this sweep, local launcher, on every worker of the slice."""
  script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch", "tpu.py")
  if not os.path.isfile(script):
    raise UserError("--launcher tpu needs a source checkout of itjax (it runs launch/tpu.py)")
  path = os.path.relpath(experiment.path)
  if path.startswith(".."):
    raise UserError(f"--launcher tpu: {experiment.path} must lie inside the repository the slice was set up from "
                    "(launch/tpu.py setup copies it); run the sweep from the repository root")
  remote = [".venv/bin/itjax", "sweep", path, "--launcher", "local", "--runs_dir", runs_dir]
  if len(runs) != len(experiment.runs):
    remote += ["--only", ",".join(runs)]
  command = [sys.executable, script, "run", "--name", tpu, "--zone", zone, "--job", f"sweep-{experiment.name}"]
  command += ["--project", project] if project else []
  command += ["--dry_run"] if dry_run else []
  return command + ["--"] + remote


def main(path: str, *, dry_run: bool, only: list[str] | None, launcher: str, parallel: int, runs_dir: str,
         tpu: str | None, zone: str | None, project: str | None, say=print) -> int:
  """Returns the exit status: 0 when every selected run finished, 1 when one failed."""
  experiment = load(path)
  runs = select(experiment, only)
  if parallel < 1:
    raise UserError(f"--parallel must be at least 1, got {parallel}")
  if launcher == "tpu":
    if not tpu or not zone:
      raise UserError("--launcher tpu needs the slice: --tpu NAME --zone ZONE (as given to launch/tpu.py create)")
    command = tpu_command(experiment, runs, runs_dir, tpu, zone, project, dry_run)
    if dry_run:
      for line in plan_lines(experiment, runs, runs_dir, here=False):
        say(line)
      say(f"on the slice: {shlex.join(command[command.index('--') + 1:])}")
    return subprocess.call(command)
  for line in plan_lines(experiment, runs, runs_dir):
    say(line)
  if dry_run:
    return 0
  results = run_local(experiment, runs, runs_dir, parallel, say)
  primary = os.environ.get("TPU_WORKER_ID", "0") in ("", "0")  # on a slice, worker 0 alone writes the summary
  if primary:
    for written in write_summary(experiment, runs_dir):
      say(f"wrote {written}")
  failed = [(run, m) for run, m in results if m["status"] != "done"]
  for run, marker in failed:
    say(f"{run}: failed in {marker['failed']} (exit {marker['exit_code']}): {marker['error']}; log: "
        f"{os.path.join(run_dir(runs_dir, experiment, run), 'sweep.log')}")
  if failed:
    say(f"sweep {experiment.name}: {len(failed)} of {len(runs)} run(s) failed; the others finished")
  return 1 if failed else 0

