"""`train(config, workdir)`: LoRA (or full) fine-tuning to config.steps, resumable, with hooks at their cadences.

Re-running on a workdir resumes from its newest checkpoint (params, optimizer state, step, RNG and the data
iterator), so a resumed run is the uninterrupted run. The loop only steps and calls hooks (itjax/training/hooks.py):
logging, evaluation suites, validation loss, checkpoints, bucket sync and plots are hooks, and a caller adds its own.
A stop request (`stop`, a threading.Event; `stop_on_sigterm()` sets one on SIGTERM) ends the loop after the current
step with a checkpoint to resume from.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time

import jax

from itjax.errors import NonFinite, UserError
from itjax.interop.checkpoint import Checkpointer
from itjax.io import distributed
from itjax.io import workdir as workdir_lib
from itjax.io.log import get as get_logger
from itjax.training import hooks as hooks_lib
from itjax.training import resume as resume_lib
from itjax.training.metrics import MetricsWriter
from itjax.training.setup import Run, setup

log = get_logger(__name__)


class Trainer:
  """Steps a prepared `Run` to config.steps, calling the default hooks and then `hooks`."""

  def __init__(self, run: Run, hooks=(), stop: threading.Event | None = None, started: float | None = None):
    self.run, self.config = run, run.config
    self.hooks = hooks_lib.default_hooks(run.config) + list(hooks)
    self.stop = stop or threading.Event()
    self.started = started or time.time()  # when the whole job began, for the expected duration
    self.checkpointer = Checkpointer(run.workdir, run.config.keep_checkpoints, run.config.keep_best)
    self.summary = {"trainable_params": run.trainable_count, "total_params": run.total_count}
    self.timings: dict[str, float] = {}
    self.best_eval = self.improved_at = self.saved_at = self.writer = self.batch_spec = None
    self.step = self.start = 0

  @property
  def stopping(self) -> bool:
    return self.stop.is_set()

  def fit(self) -> dict:
    """Trains (or resumes) to config.steps; returns a summary (params, losses, evaluations, steps or stopped_at)."""
    self._resume()
    try:
      for hook in self.hooks:
        hook.start(self)
      self.timings["loop_started"], self.timings["loop_started_at"] = time.perf_counter(), time.time()
      pending = None  # this step's metrics on the device, fetched when a hook needs them or one step later
      while self.step < self.config.steps and not self.stopping:
        batch = self.run.next_batch()
        if self.batch_spec is None:  # the batch's shapes, for what inspects the compiled step (hooks.Footprint)
          self.batch_spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch)
        self.run.state, metrics = self.run.train_step(self.run.state, self.run.frozen, batch)
        self.step += 1
        if pending is not None:
          pending.values()  # the previous step's, while this one runs: a NaN stops the run one step late at most
        pending = _Metrics(self.step, metrics)
        for hook in self.hooks:
          if hook.due(self, self.step):
            hook.on_step(self, self.step, pending.values())
      if pending is not None:
        pending.values()
      stopped = self.step < self.config.steps
      for hook in self.hooks:
        hook.end(self, stopped)
    finally:
      for hook in self.hooks:
        hook.close(self)
      self.checkpointer.wait()
    self.checkpointer.close()
    self.writer.close()
    if stopped:
      log.info("stopped at step %d; checkpoint saved, re-run the command to resume", self.step)
      return {**self.summary, "stopped_at": self.step}
    return {**self.summary, "steps": self.step}

  def _resume(self) -> None:
    """The newest restorable checkpoint of the workdir, if any: state, data position and best validation loss."""
    run = self.run
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), run.state)
    restored = self.checkpointer.restore_newest(abstract, strict=self.config.resume == "strict", warn=log.warning)
    resumed = None
    if restored:
      resumed, run.state, meta = restored
      saved = meta["base"].get("weights_sha256")  # compared before setup, unless the base lies in a bucket
      if saved != run.base["weights_sha256"]:
        raise UserError(f"{run.workdir}: the checkpoint was trained on base weights {meta['base']['path']} "
                        f"(sha256 {saved[:12]}), not those of {run.base['path']}")
      if meta["data_state"].get("fingerprint") != run.pipeline.fingerprint():
        raise resume_lib.data_mismatch(run.workdir, meta["config"], self.config)
      run.pipeline.set_state(meta["data_state"])
      self.best_eval = meta.get("best_eval")
      log.info("resuming %s at step %d", run.workdir, resumed)
    self.summary["resumed_from"] = resumed
    self.step = self.start = int(jax.device_get(run.state["step"]))
    self.writer = MetricsWriter(run.files, resumed)
    if distributed.primary():
      with open(os.path.join(run.files, "config.json"), "w") as f:
        f.write(self.config.to_json_best_effort(indent=2) + "\n")

  def write(self, step: int, values: dict) -> None:
    """A line of metrics.jsonl (and TensorBoard) at `step`."""
    self.writer.write(step, values)

  def save(self, best: bool = False) -> None:
    """A checkpoint of the state at this step (`best`: also kept as the best one)."""
    self.checkpointer.save(self.step, self.run.state, self.run.meta(self.best_eval), best=best)
    self.saved_at = self.step


class _Metrics:
  """One step's metrics, fetched from the device once; a non-finite value stops the run before anything saves it."""

  def __init__(self, step: int, on_device):
    self.step, self.on_device, self.fetched = step, on_device, None

  def values(self) -> dict[str, float]:
    if self.fetched is None:
      self.fetched = {k: float(v) for k, v in jax.device_get(self.on_device).items()}
      for k, v in self.fetched.items():
        if not math.isfinite(v):
          raise NonFinite(f"step {self.step}: {k} is {v}; stopping (the last checkpoint is intact)")
    return self.fetched


@contextlib.contextmanager
def stop_on_sigterm():
  """`with stop_on_sigterm() as stop: train(..., stop=stop)`: SIGTERM ends training after the current step with a
  checkpoint (a preempted VM, `kill`), instead of killing it mid-step. The previous handler is restored after."""
  stop = threading.Event()
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
  try:
    yield stop
  finally:
    signal.signal(signal.SIGTERM, previous)


def train(config, workdir: str, hooks=(), model=None, data: list[dict] | None = None, devices=None,
          stop: threading.Event | None = None) -> dict:
  """Trains `config` into `workdir` (resuming what is there) and returns the summary. `model`: a LoadedModel
  instead of config.model; `data`: training records (dicts in any supported format) instead of config.data.train;
  `hooks`: more `Hook`s after the default ones; `stop`: an Event that ends the run after the current step."""
  try:
    return Trainer(setup(config, workdir, model=model, data=data, devices=devices), hooks, stop).fit()
  finally:
    workdir_lib.unlock(workdir)  # taken by setup: the next run in this workdir may be another process's
