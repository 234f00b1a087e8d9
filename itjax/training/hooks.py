"""What the training loop does besides stepping, each at its own cadence: `Hook`s.

A hook has `every` (0: only at the start and the end) and four calls, each optional:

  start(trainer)                 once, before the first step of this call (trainer.step is where it resumes)
  on_step(trainer, step, metrics) after a step it is due at (every N steps, and the last), with the step's metrics
                                 as floats (loss, learning_rate, target_tokens, ...)
  end(trainer, stopped)          once, after the last step (stopped: a stop request ended the loop early)
  close(trainer)                 always, also after an error: release what the hook holds

`trainer` is the itjax.training.loop.Trainer that runs the loop; a hook may read trainer.config, trainer.run (the
state, the frozen params, the tokenizer), trainer.step, trainer.summary, and call trainer.write(step, values) for a
metrics.jsonl line or trainer.save() for a checkpoint. Hooks run in list order; the default ones (`default_hooks`)
come first, in the order log, footprint, suites, validation, checkpoint, plot, sync, so a checkpoint follows the step's
evaluations and a user hook sees them all. A user hook:

    class PrintLoss(itjax.Hook):
      every = 10
      def on_step(self, trainer, step, metrics):
        print(step, metrics["loss"])
"""

from __future__ import annotations

import os
import time

from tqdm import tqdm

from itjax.io import distributed
from itjax.io import workdir as workdir_lib
from itjax.io.log import get as get_logger
from itjax.training import metrics as metrics_lib

log = get_logger(__name__)


class Hook:
  every: int = 0

  def due(self, trainer, step: int) -> bool:
    return bool(self.every) and (step % self.every == 0 or step == trainer.config.steps)

  def start(self, trainer) -> None:
    pass

  def on_step(self, trainer, step: int, metrics: dict[str, float]) -> None:
    pass

  def end(self, trainer, stopped: bool) -> None:
    pass

  def close(self, trainer) -> None:
    pass


class Every(Hook):
  """A function called every N steps (and at the last): `Every(10, lambda trainer, step, metrics: ...)`."""

  def __init__(self, every: int, fn):
    self.every, self.fn = every, fn

  def on_step(self, trainer, step: int, metrics: dict[str, float]) -> None:
    self.fn(trainer, step, metrics)


class Log(Hook):
  """metrics.jsonl and TensorBoard lines every config.log_every steps with speed figures; the progress bar; once,
  the expected duration of the whole run."""

  def __init__(self, every: int):
    self.every = every

  def start(self, trainer) -> None:
    c = trainer.config
    self.peak = metrics_lib.peak_flops(c.peak_flops)
    self.bar = tqdm(total=c.steps, initial=trainer.step, desc="train", unit="step", dynamic_ncols=True,
                    disable=not distributed.primary())
    self.last: tuple[float, int] | None = None  # (time, step) of the last line; None before the first
    self.first: tuple[float, int] | None = None  # (time, step) after the first logged step, which compiles

  def on_step(self, trainer, step: int, metrics: dict[str, float]) -> None:
    c, now = trainer.config, time.perf_counter()
    if self.last is None:  # time from the loop's start: the other hooks' start (evaluations) is not a step's
      self.last = (trainer.timings["loop_started"], trainer.start)
      self.bar.start_t = self.bar.last_print_t = trainer.timings["loop_started_at"]  # the bar's clock too
    per_step = (now - self.last[0]) / max(step - self.last[1], 1)
    self.bar.update(step - self.last[1])
    self.last = (now, step)
    tokens = c.batch_size * c.max_len
    flops = trainer.run.flops_per_token * tokens / per_step
    values = {**metrics, "step_time": per_step, "target_tokens_per_s": metrics["target_tokens"] / per_step,
              "tokens_per_s": tokens / per_step, "tflops": flops / 1e12,
              "mfu": flops / self.peak if self.peak else None}
    trainer.write(step, values)
    self.bar.set_postfix_str(f"loss {metrics['loss']:.4f} lr {metrics['learning_rate']:.2e} "
                             f"{values['target_tokens_per_s']:.0f} target tok/s")
    self._expect(trainer, step)

  def _expect(self, trainer, step: int) -> None:
    """After two logged steps (the first compiles): what the whole run will take, said once."""
    if self.first is None:
      self.first = (time.time(), step)
    elif self.first != () and step > self.first[1]:
      c, before = trainer.config, trainer.timings.get("evaluations_before", 0.0)
      per_step = (time.time() - self.first[0]) / (step - self.first[1])
      total = time.time() - trainer.started + (c.steps - step) * per_step + before
      log.info("expected duration: about %.1f min in all (%d steps at %.1f s%s)", total / 60, c.steps - trainer.start,
               per_step, f"; the evaluations before the first step took {before / 60:.1f} min and run again after "
               "the last" if before else "")
      self.first = ()

  def close(self, trainer) -> None:
    if hasattr(self, "bar"):
      self.bar.close()


class Footprint(Hook):
  """Once, after the first step of the call: the share of the params that train and XLA's memory analysis of the
  compiled step (per device: arguments + outputs - donated + temporaries, in GiB; the compilation is the step's own,
  so this costs nothing), as a metrics.jsonl line."""
  every = 1

  def start(self, trainer) -> None:
    self.done = False

  def due(self, trainer, step: int) -> bool:
    return not self.done

  def on_step(self, trainer, step: int, metrics: dict[str, float]) -> None:
    import jax
    self.done = True
    run = trainer.run
    values = {"trainable_params": float(run.trainable_count), "total_params": float(run.total_count),
              "trainable_share": 100.0 * run.trainable_count / max(run.total_count, 1)}
    try:
      state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), run.state)
      m = run.train_step.lower(state, run.frozen, trainer.batch_spec).compile().memory_analysis()
      gib = 1024 ** 3
      values["step_memory_gb"] = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes +
                                  m.temp_size_in_bytes) / gib
      values["step_temp_gb"] = m.temp_size_in_bytes / gib
    except Exception as e:  # noqa: BLE001 -- a backend without memory analysis: the share alone
      log.debug("no memory analysis of the step: %s", e)
    trainer.write(step, values)


class Suites(Hook):
  """The generation suites of config.eval on the live params, before the first step, every config.eval.every
  steps and after the last; their metrics as eval/SUITE/METRIC lines, their outputs in trainer.summary['evals'],
  their rows in WORKDIR/evals/STEP/SUITE.jsonl."""

  def __init__(self, every: int):
    self.every = every

  def start(self, trainer) -> None:
    from itjax.evals.live import LiveEvaluator
    run = trainer.run
    tasks = os.path.join(run.files, "tasks")
    self.evaluator = LiveEvaluator(run.config.eval, tasks if os.path.isdir(tasks) else None, run.model_config,
                                   run.tokenizer, run.frozen, run.config.data.chat_template or None,
                                   distributed.primary(), base_answers_file(run), run.reference)
    trainer.summary["evals"] = {}
    if self.evaluator.suites and trainer.step == 0:
      started = time.time()
      self._evaluate(trainer, 0)
      trainer.timings["evaluations_before"] = time.time() - started

  def due(self, trainer, step: int) -> bool:
    every = trainer.config.eval.every
    return bool(self.evaluator.suites) and ((every and step % every == 0) or step == trainer.config.steps)

  def on_step(self, trainer, step: int, metrics: dict[str, float]) -> None:
    self._evaluate(trainer, step)

  def _evaluate(self, trainer, step: int) -> None:
    from itjax.evals.live import metric_lines
    outputs = self.evaluator(trainer.run.state["params"], trainer.run.frozen, at_start=step == 0)
    trainer.write(step, metric_lines(outputs))
    trainer.summary["evals"][step] = outputs
    if distributed.primary():
      write_rows(trainer.run.files, step, outputs)


def base_answers_file(run) -> str | None:
  """config.eval.base_cache/answers-FINGERPRINT.jsonl: the base's answers, shared by the runs whose base weights
  (their sha256), dtype and model shape are the same (an experiment's arms); None when the key is empty or on
  processes other than the first."""
  import hashlib
  import json
  folder = run.config.eval.get("base_cache", "")
  if not folder or not distributed.primary():
    return None
  weights = run.base.get("weights_sha256") or run.base.get("path")
  identity = json.dumps([weights, run.config.base_dtype, repr(run.model_config.replace(lora=None))])
  return os.path.join(folder, f"answers-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.jsonl")


def write_rows(files: str, step: int, outputs) -> None:
  """WORKDIR/evals/STEP/SUITE.jsonl: one line per example, with its verdicts (item, scores), so that runs can be
  compared on the same examples (itjax sweep's statistics read them)."""
  from itjax.evals import report
  out = os.path.join(files, "evals", str(step))
  os.makedirs(out, exist_ok=True)
  for name, output in outputs.items():
    report.write_rows(out, name, {"model": output})


class Validation(Hook):
  """Loss on the validation batches before the first step, every config.eval_every steps and after the last;
  tracks the best, whose step the checkpoint hook then saves as best."""

  def __init__(self, every: int):
    self.every = every

  def start(self, trainer) -> None:
    if trainer.step == 0:
      trainer.summary["eval_loss_start"] = self._evaluate(trainer, 0)

  def due(self, trainer, step: int) -> bool:
    return bool(self.every) and step % self.every == 0 and step < trainer.config.steps  # the last: in end()

  def on_step(self, trainer, step: int, metrics: dict[str, float]) -> None:
    loss = self._evaluate(trainer, step)
    if loss is not None and (trainer.best_eval is None or loss < trainer.best_eval):
      trainer.best_eval, trainer.improved_at = loss, step

  def _evaluate(self, trainer, step: int) -> float | None:
    loss = trainer.run.validation_loss()
    if loss is not None:
      trainer.write(step, {"eval_loss": loss})
    return loss

  def end(self, trainer, stopped: bool) -> None:
    if stopped:
      return
    loss = trainer.summary["eval_loss_end"] = self._evaluate(trainer, trainer.step)
    if loss is not None and trainer.config.keep_best and (trainer.best_eval is None or loss < trainer.best_eval):
      trainer.best_eval = loss
      trainer.save(best=True)


class Checkpoint(Hook):
  """Saves every config.checkpoint_every steps, at the last step, at a stop request and when validation improved."""

  def due(self, trainer, step: int) -> bool:
    c = trainer.config
    return step % c.checkpoint_every == 0 or step == c.steps or trainer.stopping or trainer.improved_at == step

  def on_step(self, trainer, step: int, metrics: dict[str, float]) -> None:
    trainer.save(best=trainer.improved_at == step)

  def end(self, trainer, stopped: bool) -> None:
    if stopped and trainer.checkpointer.latest_step() != trainer.step:  # the stop came after this step's check
      trainer.save()


class Sync(Hook):
  """A bucket workdir (gs://...) gets the run's files (metrics, plots) after each checkpoint and at the end."""

  def due(self, trainer, step: int) -> bool:
    return trainer.saved_at == step

  def on_step(self, trainer, step: int, metrics: dict[str, float]) -> None:
    workdir_lib.push(trainer.run.workdir)

  def end(self, trainer, stopped: bool) -> None:
    workdir_lib.push(trainer.run.workdir)


class Plot(Hook):
  """WORKDIR/loss.png and evals.png (the evaluations, when the run had any) when the run ends."""

  def end(self, trainer, stopped: bool) -> None:
    if not stopped:
      trainer.summary["plot"] = metrics_lib.plot_losses(trainer.run.files) if distributed.primary() else None


def default_hooks(config) -> list[Hook]:
  return [Log(config.log_every), Footprint(), Suites(config.eval.every), Validation(config.eval_every), Checkpoint(),
          Plot(), Sync()]
