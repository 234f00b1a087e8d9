"""An experiment file (experiments/NAME.py) as `itjax sweep` reads it, and where its runs live: each run's
directory runs/NAME/RUN/ and its marker RUN/sweep.json. Read by the sweep (sweep.py) and its summary (report.py).

The file's names (CONFIG, COMMON, RUNS, SEEDS, CONTROL, EVAL, METRICS, PLOT) are described in sweep.py.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from etils import epath

from itjax.errors import InputNotFound, UserError
from itjax.io import pyfile

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")
TRAIN_METRICS = ("eval_loss", "loss")  # training's own figures in a summary (see report.py)
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
  # With SEEDS (or CONTROL): each entry of the file's RUNS is an arm, run once per seed as ARM/seedN.
  arms: dict[str, dict] = field(default_factory=dict)  # {arm: its overrides}; empty without SEEDS
  seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)  # {arm: its seeds}
  control: str | None = None  # an arm, or BASE: the base's evaluation before training, the same for every seed
  variant: str = ""  # FILE.py:VARIANT
  scatter: tuple[tuple[str, str], ...] = ()  # (X, Y) metric pairs drawn arm by arm with both intervals

  @property
  def spec(self) -> str:
    """The experiment as given on the command line: FILE.py[:VARIANT]."""
    return self.path + (f":{self.variant}" if self.variant else "")

  def overrides(self, run: str) -> dict:
    return {**self.common, **self.runs[run]}

  def arm_of(self, run: str) -> str | None:
    """The arm a run belongs to (None without SEEDS)."""
    arm = run.rsplit("/seed", 1)[0]
    return arm if self.arms and arm in self.arms else None


def _variant(module, path: str, arg: str):
  """The file's names with VARIANTS[arg] ({NAME: value}) in place of theirs."""
  variants = getattr(module, "VARIANTS", {}) or {}
  if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
    raise UserError(f"{path}: VARIANTS must be a dict {{variant: {{NAME: value}}}}")
  if arg not in variants:
    raise UserError(f"{path}: no variant {arg!r}; its variants: {', '.join(variants) or 'none (no VARIANTS)'}")
  import types
  names = {k: getattr(module, k) for k in dir(module) if k.isupper()}
  return types.SimpleNamespace(**{**names, **variants[arg]})


def load(path: str, given_control: str | None = None) -> Experiment:
  """Reads and checks an experiment file, `FILE.py[:VARIANT]`: every run's overrides are applied to the base config
  here, so an unknown key or a value of the wrong type stops the sweep before anything runs. A VARIANT takes the
  names that the file's VARIANTS[VARIANT] gives in place of the file's own, and its runs go to NAME_VARIANT.
  `given_control` (an arm or BASE) replaces the file's CONTROL: the summary compares the arms with it."""
  path, arg = path.rsplit(":", 1) if ":" in path and not path.endswith(".py") else (path, "")
  module = pyfile.run(path, "experiment file", "itjax_experiment")
  name = os.path.splitext(os.path.basename(path))[0]
  if arg:
    module, name = _variant(module, path, arg), f"{name}_{arg}"
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
  scatter = getattr(module, "SCATTER", ()) or ()
  scatter = (tuple(scatter),) if len(scatter) == 2 and all(isinstance(m, str) for m in scatter) else tuple(
      tuple(pair) for pair in scatter)
  if any(len(pair) != 2 for pair in scatter):
    raise UserError(f"{path}: SCATTER must be a pair of metrics (X, Y) or a tuple of such pairs")
  arms, seeds, control = _arms(module, path, runs)
  if given_control is not None:
    if not arms:
      raise UserError(f"--control {given_control}: {path} has no arms to compare (it sets neither SEEDS nor CONTROL)")
    check_control(given_control, arms, "--control")
    control = given_control
  if arms:  # seed by seed, so that a sweep stopped halfway has every arm of the seeds it finished
    order = sorted({s for values in seeds.values() for s in values})
    runs = {f"{arm}/seed{seed}": {**arms[arm], "seed": seed} for seed in order for arm in arms if seed in seeds[arm]}
  experiment = Experiment(path, name, _config_path(config, path), dict(common), dict(runs), evals, metrics, plot,
                          arms, seeds, control, arg, scatter)
  base = base_config(experiment)
  for run in runs:
    apply_overrides(base, experiment.overrides(run), f"{path}: run {run!r}")
  return experiment


BASE = "(base)"  # CONTROL = BASE compares every arm with the base model's evaluation before training


def check_control(control: str, runs, where: str) -> None:
  if control != BASE and control not in runs:
    raise UserError(f"{where} {control!r} is not an arm of RUNS; its arms: {', '.join(runs)} (or {BASE!r}: the "
                    "base before training)")


def _arms(module, path: str, runs: dict) -> tuple[dict, dict, str | None]:
  """({arm: overrides}, {arm: seeds}, control) of a file with SEEDS or CONTROL; ({}, {}, None) without either.
  SEEDS is a tuple of seeds for every arm, or {arm: seeds}; CONTROL names an arm (default: the first) or BASE."""
  given, control = getattr(module, "SEEDS", None), getattr(module, "CONTROL", None)
  if given is None and control is None:
    return {}, {}, None
  if given is None:
    given = (0,)
  per_arm = given if isinstance(given, dict) else {arm: given for arm in runs}
  unknown = [a for a in per_arm if a not in runs]
  if unknown or set(per_arm) != set(runs):
    missing = [a for a in runs if a not in per_arm]
    raise UserError(f"{path}: SEEDS names {', '.join(map(repr, unknown)) or 'no unknown arm'} and leaves out "
                    f"{', '.join(map(repr, missing)) or 'none'}: a dict SEEDS gives the seeds of every arm of RUNS")
  seeds = {}
  for arm, values in per_arm.items():
    values = (values,) if isinstance(values, int) else tuple(values)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or len(
        set(values)) != len(values):
      raise UserError(f"{path}: SEEDS of {arm!r} must be distinct integers, e.g. (0, 1, 2); got {values!r}")
    if "seed" in runs[arm]:
      raise UserError(f"{path}: run {arm!r} sets 'seed', which SEEDS sets for each arm: drop it from RUNS")
    seeds[arm] = values
  if control is None:
    control = next(iter(runs))
  check_control(control, runs, f"{path}: CONTROL")
  return {arm: dict(o) for arm, o in runs.items()}, seeds, control


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


def base_config(experiment: Experiment):
  from itjax.training.config import from_file
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


# --- runs on disk -------------------------------------------------------------------------------------------------


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


def write_marker(workdir: str, marker: dict) -> None:
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  (epath.Path(workdir) / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
