"""`itjax sweep`: the runs of an experiment file, each in runs/NAME/RUN/, then one summary table and plot.

An experiment file is a Python file with these names (see experiments/; experiment.py reads it):
  CONFIG   the base config, 'configs/X.py[:ARG]' (relative to the current directory or the repository root)
  COMMON   overrides for every run, {'KEY': value} with KEY as in --config.KEY (optional)
  RUNS     {run name: {'KEY': value, ...}}: one run per entry, each its own overrides
  SEEDS    (optional) training seeds, e.g. (0, 1, 2), or {arm: seeds}: each entry of RUNS is then an arm, run once
           per seed as ARM/seedN (config.seed = N); the summary gives each arm's mean over its seeds with a 95%
           interval and its paired difference to CONTROL with an interval and p-value (itjax.sweep.stats)
  CONTROL  (optional) the arm the others are compared with (default: the first of RUNS), or '(base)': the base
           model's evaluation before training, the same for every seed (`--control` replaces it in the summary)
  EVAL     flags of `itjax eval` run on each trained run, e.g. {'suites': 'tasks,forgetting', 'limit': 100}
           (optional; the evaluations that training itself runs, config.eval, are read from metrics.jsonl,
           their step-0 figures as the base's; without either, the summary has the final validation loss)
  METRICS  the summary's columns (optional): 'eval_loss', 'loss', 'SUITE/METRIC' of the evaluation
  PLOT     the metrics drawn in summary.png, one panel each (optional: the first four of METRICS)
  SCATTER  (optional, with SEEDS) (X, Y) or ((X, Y), ...): summary_scatter.png draws each arm at (X, Y) with both
           intervals, e.g. task gain against forgetting
  VARIANTS (optional) {VARIANT: {NAME: value}}: `itjax sweep FILE.py:VARIANT` takes these names in place of the
           file's (a pod-scale CONFIG and COMMON, say); its runs go to RUNS_DIR/NAME_VARIANT

A run that finished (RUN/sweep.json says so) is skipped when the sweep runs again; a run that failed is reported,
does not stop the others and is tried again next time (training resumes from its last checkpoint).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from itjax.errors import UserError
from itjax.io import outputs
from itjax.io.workdir import is_remote, upload
from itjax.sweep.experiment import Experiment, flag_value, load, read_marker, run_dir, write_marker
from itjax.sweep import compare, report


def train_args(experiment: Experiment, run: str, workdir: str) -> list[str]:
  """`itjax train` of a run; its evaluations keep the base's answers in RUNS_DIR/NAME/_base (config.eval.base_cache),
  so the runs of the experiment answer with their base once (a bucket's runs do not share them)."""
  overrides = experiment.overrides(run)
  shared = {} if is_remote(workdir) or "eval.base_cache" in overrides else {
      "eval.base_cache": os.path.join(os.path.dirname(os.path.dirname(workdir)) if experiment.arms else
                                      os.path.dirname(workdir), "_base")}
  return ["train", "--config", experiment.config, "--workdir", workdir] + [
      f"--config.{k}={flag_value(v)}" for k, v in {**overrides, **shared}.items()]


def eval_args(experiment: Experiment, workdir: str, out: str | None = None) -> list[str]:
  """`itjax eval` of a trained run into WORKDIR/eval (or `out`: a bucket workdir's results are written locally)."""
  if not experiment.eval:
    return []
  args = ["eval", "--model", workdir, "--out", out or os.path.join(workdir, "eval")]
  for key, value in experiment.eval.items():
    value = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
    args.append(f"--{key}" if value is True else f"--no{key}" if value is False else f"--{key}={value}")
  return args + ["--overwrite"]  # a run evaluated again (it failed, or was trained on) replaces its evaluation


def shown(args: list[str]) -> str:
  return shlex.join(["itjax"] + args)


# --- running ---------------------------------------------------------------------------------------------------


def select(experiment: Experiment, only: list[str] | None) -> list[str]:
  """The runs --only names (an arm names all its seeds), in the file's order."""
  if not only:
    return list(experiment.runs)
  unknown = [r for r in only if r not in experiment.runs and r not in experiment.arms]
  if unknown:
    known = list(experiment.arms) + list(experiment.runs) if experiment.arms else list(experiment.runs)
    raise UserError(f"--only: {experiment.path} has no run {', '.join(map(repr, unknown))}; its "
                    f"{'arms and runs' if experiment.arms else 'runs'}: {', '.join(known)}")
  return [r for r in experiment.runs if r in only or experiment.arm_of(r) in only]


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
           f"({len(experiment.runs)} in {experiment.spec}), into {os.path.join(runs_dir, experiment.name)}"]
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
  remote = is_remote(workdir)
  if remote:  # the log and the evaluation are written locally, copied next to the run at the end
    local = tempfile.mkdtemp(prefix=f"itjax-sweep-{run}-")
    log_path, eval_out = os.path.join(local, "sweep.log"), os.path.join(local, "eval")
  else:
    eval_out = None
    log_path = os.path.join(workdir, "sweep.log")
    os.makedirs(workdir, exist_ok=True)
  started = time.time()
  status, rc, command, cpu_s = "done", 0, None, 0.0
  with open(log_path, "a") as log:
    for args in (train_args(experiment, run, workdir), eval_args(experiment, workdir, eval_out)):
      if not args:
        continue
      log.write(f"$ {shown(args)}\n")
      log.flush()
      rc, used = _call(_itjax(args), log)
      cpu_s += used
      if rc != 0:
        status, command = "failed", args[0]
        break
  if remote:
    upload(local, workdir)
    shutil.rmtree(local, ignore_errors=True)
  marker = {"status": status, "run": run, "overrides": experiment.overrides(run),
            "wall_s": round(time.time() - started, 1), "cpu_s": round(cpu_s, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), **provenance()}
  if status == "failed":
    marker.update(failed=command, exit_code=rc, error=_last_error(log_path))
  write_marker(workdir, marker)
  return marker


def provenance() -> dict:
  """Where a run ran: itjax's commit (when it runs from a git checkout, '+' when the checkout has changes), the CPU
  model and its cores."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = {"cores": os.cpu_count()}
  try:
    with open("/proc/cpuinfo") as f:
      out["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
  except OSError:
    pass
  if os.path.isdir(os.path.join(root, ".git")):
    git = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True, timeout=30)  # noqa
    try:
      head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
      if head.returncode == 0:
        out["commit"] = head.stdout.strip() + ("+" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
      pass
  return out


def _call(command: list[str], log) -> tuple[int, float]:
  """(exit status, CPU seconds, user + system) of a command run to its end with its output in `log`: the CPU time is
  that process's own (and its children's), also when other runs go on beside it."""
  process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
  try:
    _, status, usage = os.wait4(process.pid, 0)
  except BaseException:
    process.kill()
    process.wait()
    raise
  process.returncode = os.waitstatus_to_exitcode(status)
  return process.returncode, usage.ru_utime + usage.ru_stime


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


# --- the command -----------------------------------------------------------------------------------------------


def tpu_command(experiment: Experiment, runs: list[str], runs_dir: str, tpu: str, zone: str, project: str | None,
                dry_run: bool) -> list[str]:
  """`python launch/tpu.py run ...` that starts this sweep, local launcher, on every worker of the slice."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  script = os.path.join(root, "launch", "tpu.py")
  if not os.path.isfile(script):
    raise UserError("--launcher tpu needs a source checkout of itjax (it runs launch/tpu.py)")
  path = os.path.relpath(experiment.path) + (f":{experiment.variant}" if experiment.variant else "")
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


def write_summary(experiment: Experiment, runs_dir: str) -> list[str]:
  """The summary files of the runs on disk (by arm with intervals for an experiment with SEEDS); their paths."""
  if not experiment.arms:
    return report.write_summary(experiment, runs_dir)
  rows, base = report.collect(experiment, runs_dir)
  return compare.write(experiment, runs_dir, rows, base, experiment.metrics or report.default_metrics(rows))


def summarize(path: str, runs_dir: str, say=print, control: str | None = None) -> int:
  """`--summary_only`: the summary of what RUNS_DIR/NAME holds now (compared with `control`, if given)."""
  experiment = load(path, control)
  if not os.path.isdir(os.path.join(runs_dir, experiment.name)) and not is_remote(runs_dir):
    raise UserError(f"--summary_only: no runs of {experiment.spec} in {os.path.join(runs_dir, experiment.name)}")
  for written in write_summary(experiment, runs_dir):
    say(f"wrote {written}")
  return 0


def main(path: str, *, dry_run: bool, only: list[str] | None, launcher: str, parallel: int, runs_dir: str,
         tpu: str | None, zone: str | None, project: str | None, say=print, control: str | None = None) -> int:
  """Returns the exit status: 0 when every selected run finished, 1 when one failed."""
  experiment = load(path, control)
  runs = select(experiment, only)
  if launcher == "local":  # RUNS_DIR/NAME is continued (finished runs are skipped), never a file nor around an input
    outputs.check(os.path.join(runs_dir, experiment.name), "--runs_dir",
                  reads=[("the experiment file", experiment.path)],
                  directory=True, resumable=True)
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

