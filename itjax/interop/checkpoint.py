"""Checkpoints with orbax: the trainable params and their optimizer state, the step, the RNG and the data state.

The frozen params are never saved: the checkpoint refers to the base weights by path and sha256, and a resume
checks that they are the same. In full fine-tuning every param is trainable, so everything is saved. The last
`keep` checkpoints are kept in WORKDIR/checkpoints, and with keep_best the one with the lowest validation loss in
WORKDIR/best.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re

import jax
import orbax.checkpoint as ocp
from etils import epath

from itjax.io import distributed
from itjax.io import workdir as workdir_lib
from itjax.io.atomic import write_json
from itjax.io.log import get as get_logger
from itjax.io.log import quiet_failed_reads
from itjax.errors import CheckpointNotWritten, InputNotFound, UserError
from itjax.model.config import LoraSpec

log = get_logger(__name__)

WEIGHT_FILES = (".safetensors", ".gguf")


def _model_files(path: str, suffixes: tuple[str, ...]) -> list[str]:
  """The file itself, or a directory's files with these suffixes in name order."""
  return [path] if os.path.isfile(path) else sorted(
      os.path.join(path, f) for f in os.listdir(path) if f.endswith(suffixes))


def _hash_files(files: list[str]) -> str:
  h = hashlib.sha256()
  for name in files:
    with open(name, "rb") as f:
      for block in iter(lambda: f.read(1 << 22), b""):
        h.update(block)
  return h.hexdigest()


def weights_sha256(path: str, cache: str | None = None) -> str:
  """sha256 of a model's weights: the file, or a directory's weight files in name order (not its JSON: editing a
  tokenizer's chat template does not change the weights). Remembered in CACHE/weights_sha256.json against each
  file's (path, size, mtime), so an unchanged base is read once, not at every start."""
  from itjax.io.demo_model import cache_dir
  files = _model_files(path, WEIGHT_FILES)
  stats = [os.stat(f) for f in files]
  key = json.dumps([[os.path.abspath(f), st.st_size, st.st_mtime_ns] for f, st in zip(files, stats)])
  store = os.path.join(cache or cache_dir(), "weights_sha256.json")
  try:
    with open(store) as f:
      known = json.load(f)
  except (OSError, ValueError):
    known = {}
  if key not in known:
    known[key] = _hash_files(files)
    try:
      os.makedirs(os.path.dirname(store), exist_ok=True)
      write_json(store, known)
    except OSError:  # a read-only cache costs a re-hash next time, nothing more
      pass
  return known[key]


class DamagedCheckpoint(UserError):
  """The newest checkpoint cannot be restored and config.resume is strict."""


def _os_reason(error: BaseException) -> str | None:
  """The operating system's reason when `error` is a failed write, else None. Tensorstore's write errors reach us
  as ValueErrors that carry the error number as os_error_code='N'."""
  if isinstance(error, OSError) and error.errno:
    return os.strerror(error.errno)
  found = re.search(r"os_error_code='(\d+)'", str(error))
  return os.strerror(int(found[1])) if found else None


def _directory(workdir: str, name: str):
  """WORKDIR/NAME for orbax: an absolute local path, or a bucket path (gs://...) as it is."""
  return epath.Path(workdir) / name if workdir_lib.is_remote(workdir) else os.path.abspath(os.path.join(workdir, name))


def _committed_steps(directory: str) -> list[int]:
  """Steps whose save finished: orbax writes into STEP.orbax-checkpoint-tmp* and renames it to STEP at the end."""
  path = epath.Path(directory)
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []


def _problem(error: BaseException) -> str:
  """Why a checkpoint did not restore, in one short line: TensorStore appends a dump of its spec to its errors."""
  while error.__cause__ is not None:  # the file and what is wrong with it, rather than orbax's wrapper
    error = error.__cause__
  text = re.split(r"\.?\s*See full TensorStore details", f"{type(error).__name__}: {error}")[0]
  return " ".join(text.split())[:240]


def _first_restorable(manager: ocp.CheckpointManager, steps: list[int], restore, damaged):
  """(step, restore(step)) for the first of `steps` that restores, or None. `damaged(step, where, problem)` hears of
  each one that does not (and may raise to stop)."""
  for step in steps:
    try:
      return step, restore(step)
    except Exception as e:  # orbax and tensorstore raise many kinds; each means this step cannot be used
      quiet_failed_reads()
      damaged(step, os.path.join(manager.directory, str(step)), _problem(e))
  return None


class Checkpointer:
  def __init__(self, workdir: str, keep: int, keep_best: bool):
    self.workdir, self.saving = workdir, None
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self.manager = ocp.CheckpointManager(_directory(workdir, "checkpoints"), options=options)
    self.best = None
    if keep_best:
      self.best = ocp.CheckpointManager(_directory(workdir, "best"),
                                        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  @contextlib.contextmanager
  def _writing(self):
    """Turns a save that the filesystem refused (now or in the background) into one line naming the workdir, the
    step and the checkpoint that is still whole. Orbax writes a step into a temporary directory and renames it only
    once complete, so the steps before it are untouched."""
    try:
      yield
    except Exception as e:
      reason = _os_reason(e)
      if reason is None:
        raise
      found = re.search(r"/(\d+)\.orbax-checkpoint-tmp", str(e))
      step = int(found[1]) if found else self.saving
      intact = [s for s in _committed_steps(str(self.manager.directory)) if s != step]
      kept = (f"the checkpoint of step {intact[-1]} is intact: make room and run the same command again to resume "
              "from it" if intact else "there is no earlier checkpoint to resume from")
      self._abandon()
      raise CheckpointNotWritten(f"{self.workdir}: the checkpoint of step {step} could not be written ({reason}); "
                                 f"{kept}") from None

  def _abandon(self) -> None:
    """Stops the managers' background threads after a failed save, so the process ends with the error alone."""
    for manager in (self.manager, self.best):
      try:
        if manager is not None:
          manager.close()
      except Exception:  # the failed save is raised again here; its message is already on its way
        pass

  def save(self, step: int, state: dict, meta: dict, best: bool = False) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    with self._writing():
      self.saving = step
      if step != self.manager.latest_step():
        self.manager.save(step, args=args, force=True)
      if best and self.best is not None and step != self.best.latest_step():
        self.best.save(step, args=args, force=True)

  def restore(self, abstract_state: dict, step: int | None = None) -> tuple[dict, dict]:
    step = self.manager.latest_step() if step is None else step
    out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                            meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def restore_newest(self, abstract_state: dict, strict: bool, warn) -> tuple[int, dict, dict] | None:
    """(step, state, meta) of the newest checkpoint that restores, None if there is none. A damaged one (missing or
    truncated files, bad metadata) newer than it is reported through `warn` and moved aside, or, when `strict`,
    stops the run. When none restores, the run stops and nothing is moved."""
    found_damaged = []

    def damaged(step: int, where: str, problem: str) -> None:
      if strict:
        raise DamagedCheckpoint(f"{where}: the checkpoint of step {step} cannot be restored ({problem}); "
                                "config.resume=strict stops here (auto resumes from an older one)") from None
      found_damaged.append((step, where, problem))

    found = _first_restorable(self.manager, sorted(self.manager.all_steps(), reverse=True),
                              lambda step: self.restore(abstract_state, step), damaged)
    if found is None and found_damaged:
      step, where, problem = found_damaged[0]
      raise DamagedCheckpoint(f"{self.workdir}: none of its {len(found_damaged)} checkpoints can be restored (step "
                              f"{step}: {problem}); nothing was changed: train into another --workdir, or set "
                              "--config.resume=restart to move this run aside and start over")
    for step, where, problem in found_damaged:
      aside = f"{where}.damaged"
      while epath.Path(aside).exists():
        aside += "+"
      if distributed.primary():
        epath.Path(where).rename(aside)  # kept for a look, out of the way of the steps
      distributed.barrier(f"step {step} moved aside")
      warn(f"warning: {where}: the checkpoint of step {step} cannot be restored ({problem}); moved to {aside}, "
           f"resuming from step {found[0]}")
    if found_damaged:
      self.manager.reload()  # the steps are gone: later saves may use their numbers again
    return None if found is None else (found[0], *found[1])

  def wait(self) -> None:
    with self._writing():
      self.manager.wait_until_finished()
      if self.best is not None:
        self.best.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
    if self.best is not None:
      self.best.close()


def _latest(workdir: str, step: int | None) -> tuple[ocp.CheckpointManager, int]:
  directory = _directory(workdir, "checkpoints")
  if not epath.Path(directory).exists():  # reading must not create it
    raise InputNotFound(f"{workdir}: no checkpoint in {os.path.join(workdir, 'checkpoints')}")
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False), item_handlers={
      "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
  step = manager.latest_step() if step is None else step
  if step is None:
    raise InputNotFound(f"{workdir}: no checkpoint in {os.path.join(workdir, 'checkpoints')}")
  return manager, step


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of a workdir's checkpoints that finished saving."""
  return _committed_steps(str(_directory(workdir, "checkpoints")))


def read_meta(workdir: str, step: int | None = None) -> dict:
  """The JSON metadata of a workdir's checkpoint (the latest by default)."""
  manager, step = _latest(workdir, step)
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def _on_this_process(manager: ocp.CheckpointManager, step: int) -> dict:
  """A restore target of the saved shapes and dtypes on this process's first device: a checkpoint written over
  many devices (a pod slice) reads where there is one."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                      manager.item_metadata(step)["state"].tree, is_leaf=lambda x: hasattr(x, "shape"))


def read_trained(workdir: str, step: int | None = None) -> tuple[dict, dict]:
  """(trained params, metadata) of a workdir's checkpoint, as host arrays: `step`, or the newest that restores
  (a damaged one is passed over with a warning that names it). Logs which step it used."""
  manager, latest = _latest(workdir, step)
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)

  def damaged(s: int, where: str, problem: str) -> None:
    if s == steps[-1]:  # the step asked for, or the oldest there is
      raise DamagedCheckpoint(f"{where}: the checkpoint of step {s} cannot be restored ({problem})") from None
    log.warning("warning: %s: the checkpoint of step %d cannot be restored (%s); using an older one", where, s,
                problem)

  s, out = _first_restorable(manager, steps, lambda s: manager.restore(s, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_on_this_process(manager, s)), meta=ocp.args.JsonRestore())), damaged)
  log.info("%s: the checkpoint of step %d%s", workdir, s, " (the newest)" if s == latest and step is None else "")
  return out["state"]["params"], out["meta"]


def lora_spec(meta: dict) -> LoraSpec | None:
  """The run's LoRA spec as its checkpoint metadata records it (None for full fine-tuning)."""
  spec = meta["model_config"].get("lora")
  return None if spec is None else LoraSpec(**{**spec, "targets": tuple(spec["targets"])})
