"""`itjax train`: LoRA (or full) fine-tuning of a loaded model on the data path, sharded over a device mesh.

The only module that knows model, data, optimizer, sharding and checkpoints. Re-running on a workdir resumes from
its latest checkpoint (params, optimizer state, step, RNG and the data iterator), so a resumed run is the
uninterrupted run. SIGTERM saves a checkpoint at the end of the current step and exits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from itjax.training import config as config_lib
from itjax.model import lora as lora_lib
from itjax.training import metrics as metrics_lib
from itjax.io import distributed
from itjax.training import optim, sharding
from itjax.io import workdir as workdir_lib
from itjax.interop.checkpoint import Checkpointer, legacy_sha256, weights_sha256
from itjax.data import dataset
from itjax.data.pipeline import Pipeline
from itjax.errors import NonFinite, UserError
from itjax.model.llama import param_axes, param_shapes
from itjax.training.step import compiler_options, make_eval_step, make_train_step


NonFiniteError = NonFinite  # the name the step's callers know


def _log(message: str) -> None:
  if distributed.primary():
    tqdm.write(message, file=sys.stderr)


@dataclasses.dataclass
class Run:
  """Everything a training run holds besides the loop: built by `setup`, used by `train` and tests."""
  config: ml_collections.ConfigDict
  workdir: str
  model_config: object
  tokenizer: object
  state: dict  # step, params (trainable), opt_state, rng
  frozen: dict
  train_step: object
  eval_step: object
  pipeline: Pipeline
  validation: list
  mesh: object
  batch_sharding: object
  eval_sharding: object
  base: dict  # {'path', 'sha256'}
  report: object
  flops_per_token: float

  @property
  def trainable_count(self) -> int:
    return lora_lib.count_params(self.state["params"])

  @property
  def total_count(self) -> int:
    return self.trainable_count + lora_lib.count_params(self.frozen)


def model_source(config) -> str:
  if config.model == "demo":
    from itjax.io import demo_model
    return demo_model.fetch()
  return config.model


def data_options(config: ml_collections.ConfigDict) -> dataset.Options:
  d = config.data
  return dataset.Options(config.max_len, d.length_policy, d.train_on, d.chat_template or None, d.format or None,
                         d.on_error)


def eval_batches(config: ml_collections.ConfigDict, spec: str, tokenizer) -> list:
  """One unshuffled pass over evaluation data (this host's rows), at most config.eval_batches batches."""
  sources, _ = dataset.load_sources(spec, tokenizer, data_options(config))
  batches = list(Pipeline(sources, config.max_len, config.batch_size, seed=0, epochs=1, pack=config.data.pack,
                          pad_id=tokenizer.pad_id))
  return batches[:config.eval_batches or None]


def write_replay(config: ml_collections.ConfigDict, workdir: str, model) -> dict:
  """The base model's own answers to config.replay.n prompts in WORKDIR/replay (itjax distill --self), resumed
  where a run stopped; a finished file costs only its reading."""
  from itjax.curate.curate import counts_text
  from itjax.curate.distill import Options, self_replay
  r = config.replay
  summary = self_replay(r.prompts, config_lib.replay_path(workdir), model,
                        Options(batch_size=r.batch_size, max_new_tokens=r.max_new_tokens, limit=r.n, seed=r.seed,
                                progress=distributed.primary()))
  rejected = counts_text(summary["rejected_by_reason"])
  if not summary["accepted"]:
    raise UserError(f"config.replay: none of the base's {summary['records']} answers was kept (rejected: "
                    f"{rejected}); raise replay.max_new_tokens or give other replay.prompts")
  _log(f"self-replay: {summary['accepted']} of {summary['records']} answers kept (rejected: {rejected}), mixed into "
       f"data.train at weight {r.weight}")
  return summary


def check_batch_split(config: ml_collections.ConfigDict, num_devices: int, num_processes: int) -> None:
  """The global batch must split evenly: over the hosts (each feeds its rows), over the microbatches, and each
  microbatch over the data x fsdp devices of the mesh. Stops with the numbers otherwise."""
  try:
    data, fsdp, _ = sharding.mesh_shape(tuple(config.mesh), num_devices)
  except UserError as e:
    raise UserError(f"config.mesh: {e}") from None
  rows = config.batch_size // config.microbatches
  if config.batch_size % (num_processes * config.microbatches):
    raise UserError(f"config.batch_size {config.batch_size} does not split over {num_processes} hosts x "
                    f"{config.microbatches} microbatches; make it a multiple of {num_processes * config.microbatches}")
  if rows % (data * fsdp):
    raise UserError(f"config.batch_size {config.batch_size} / config.microbatches {config.microbatches} = {rows} "
                    f"rows per microbatch do not split over the mesh's data x fsdp = {data} x {fsdp} devices; make "
                    f"them a multiple of {data * fsdp}")


def setup(config: ml_collections.ConfigDict, workdir: str, devices=None) -> Run:
  """Loads model and data, builds the mesh (over `devices`, default all), state, and the compiled steps."""
  from itjax.interop.loading import load_model
  config_lib.validate(config)
  files = workdir_lib.prepare(workdir)  # the run's files: the workdir, or a bucket workdir's local mirror
  if config.tasks.n > 0 and distributed.primary() and not os.path.exists(os.path.join(files, "tasks", "train.jsonl")):
    from itjax.data.tasks import write_splits
    write_splits(os.path.join(files, "tasks"), config.tasks.n, config.tasks.seed, config.tasks.holdout,
                 phrasings=config.tasks.phrasings)
  workdir_lib.share(workdir, "tasks")  # the other processes read them
  config_lib.validate(config, files)
  check_batch_split(config, len(devices or jax.devices()), jax.process_count())

  src = model_source(config)
  loaded = load_model(src)
  if config.replay.n > 0 and distributed.primary():
    write_replay(config, files, loaded)
  workdir_lib.share(workdir, "replay")
  adapters = None
  if config.init_adapter:
    from itjax.interop.export import read_peft_adapter
    spec, adapters = read_peft_adapter(config.init_adapter, loaded.config)
    config.lora.rank, config.lora.alpha, config.lora.rslora = spec.rank, spec.alpha, spec.rslora
    config.lora.targets = spec.targets
    _log(f"starting from the adapter {config.init_adapter}: rank {spec.rank}, alpha {spec.alpha}, "
         f"rslora {spec.rslora}, targets {spec.targets}")
  mcfg = config_lib.training_model_config(config, loaded.config)
  lora = mcfg.lora
  patterns = (lora_lib.LORA_ONLY if lora else lora_lib.FULL) + tuple(config.trainable)

  # Data: tokenized once, batches by the pipeline (host shard of the global batch).
  options = data_options(config)
  drop = tuple(t.strip() for t in config.data.drop_types.split(",") if t.strip())
  sources, report = dataset.load_sources(config_lib.data_paths(config, "train", files), loaded.tokenizer, options,
                                         drop)
  if drop:
    _log(f"data.drop_types: left out {report.left_out:,} of the {report.records:,} records of data.train ("
         + ", ".join(f"{t} {report.left_out_by_type[t]:,}" for t in drop) + ")")
  pipeline = Pipeline(sources, config.max_len, config.batch_size, config.seed, pack=config.data.pack,
                      pad_id=loaded.tokenizer.pad_id)
  report.packing_efficiency = pipeline.efficiency(0)
  if len(sources) > 1:
    _log("data mix per epoch: " + ", ".join(f"{os.path.basename(name)} {n:,} examples ({100 * share:.0f}% of trained "
                                            f"tokens)" for name, n, share in pipeline.mix()))
  validation = []
  if config.data.validation:
    validation = eval_batches(config, config_lib.data_paths(config, "validation", files), loaded.tokenizer)

  # Params: the base plus fresh adapters, cut into trainable and frozen, placed on the mesh by logical axes.
  mesh = sharding.make_mesh(tuple(config.mesh), devices)  # its shape was checked by check_batch_split
  rng = jax.random.PRNGKey(config.seed)
  if adapters is None:
    adapters = lora_lib.init_adapters(mcfg, jax.random.fold_in(rng, 1))
  params = lora_lib.join(adapters, loaded.params)
  trainable, frozen = lora_lib.split(params, patterns)
  if lora is not None and config.base_dtype != "float32":
    frozen = jax.tree.map(lambda x: np.asarray(x).astype(jnp.dtype(config.base_dtype)), frozen)
  shapes, axes = param_shapes(mcfg), param_axes(mcfg)
  missing = set(lora_lib.flatten(shapes)) - set(lora_lib.flatten(params))
  if missing:
    raise UserError(f"the model is missing params {sorted(missing)[:5]}")
  place = lambda tree: jax.device_put(tree, sharding.tree_shardings(mesh, axes, tree))
  trainable, frozen = place(trainable), place(frozen)

  lr = optim.schedule(config.learning_rate, config.steps, config.warmup_steps, config.lr_decay,
                      config.final_lr_fraction)
  tx = optim.optimizer(trainable, lr, config.weight_decay, config.adam_b1, config.adam_b2, config.adam_eps,
                       config.clip_norm or None)
  state_sh = {"step": sharding.replicated(mesh), "params": jax.tree.map(lambda x: x.sharding, trainable),
              "opt_state": optim.state_shardings(tx, trainable, sharding.replicated(mesh)),
              "rng": sharding.replicated(mesh)}
  state = {"step": jnp.zeros((), jnp.int32), "params": trainable,
           "opt_state": jax.jit(tx.init, out_shardings=state_sh["opt_state"])(trainable), "rng": rng}
  state = jax.device_put(state, state_sh)
  frozen_sh = jax.tree.map(lambda x: x.sharding, frozen)
  batch_sh, eval_sh = sharding.batch_sharding(mesh, leading=1), sharding.batch_sharding(mesh)
  train_step = jax.jit(sharding.with_rules(make_train_step(mcfg, tx, lr, config.loss_chunk), mesh),
                       in_shardings=(state_sh, frozen_sh, batch_sh),
                       out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,),
                       compiler_options=compiler_options())
  eval_step = jax.jit(sharding.with_rules(make_eval_step(mcfg, config.loss_chunk), mesh),
                      in_shardings=(state_sh["params"], frozen_sh, eval_sh), out_shardings=sharding.replicated(mesh),
                      compiler_options=compiler_options())
  flops = metrics_lib.train_flops_per_token(mcfg, shapes, set(lora_lib.flatten(trainable)), config.max_len)
  base = {"path": os.path.abspath(src), "weights_sha256": weights_sha256(src)}
  return Run(config, files, mcfg, loaded.tokenizer, state, frozen, train_step, eval_step, pipeline, validation,
             mesh, batch_sh, eval_sh, base, report, flops)


def global_batch(run: Run, host_batch: dict, microbatches: int) -> dict:
  """Host rows [B/H, T] -> a global array [M, B/M, T] split over ('data', 'fsdp')."""
  out = {}
  for k, v in host_batch.items():
    local = v.reshape(microbatches, v.shape[0] // microbatches, v.shape[1])
    out[k] = jax.make_array_from_process_local_data(run.batch_sharding, local)
  return out


def evaluate(run: Run, batches: list | None = None) -> float | None:
  """Mean loss per target token over the validation batches (or the given ones)."""
  batches = run.validation if batches is None else batches
  if not batches:
    return None
  loss = count = 0.0
  for b in batches:
    batch = {k: jax.make_array_from_process_local_data(run.eval_sharding, v) for k, v in b.items()}
    l, _, n = jax.device_get(run.eval_step(run.state["params"], run.frozen, batch))
    loss, count = loss + float(l), count + float(n)
  return loss / max(count, 1.0)


def _meta(run: Run, best_eval: float | None) -> dict:
  mcfg = dataclasses.asdict(run.model_config)
  return {"data_state": run.pipeline.get_state(), "base": run.base, "config": json.loads(run.config.to_json()),
          "model_config": mcfg, "trainable": sorted(lora_lib.flatten(run.state["params"])), "best_eval": best_eval}


def _check_finite(step: int, values: dict) -> None:
  for k, v in values.items():
    if not math.isfinite(v):
      raise NonFiniteError(f"step {step}: {k} is {v}; stopping (the last checkpoint is intact)")


def train(config: ml_collections.ConfigDict, workdir: str, run: Run | None = None,
          started: float | None = None) -> dict:
  """Trains (or resumes) to config.steps; returns a summary. `started` (time.time()) is when the whole job began,
  for the expected duration printed once two steps have run (default: now)."""
  started = started or time.time()
  run = run or setup(config, workdir)
  c, files = run.config, run.workdir  # checkpoints go to `workdir`, the other files to `files` (see workdir.py)
  ckpt = Checkpointer(workdir, c.keep_checkpoints, c.keep_best)
  best_eval = None
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), run.state)
  restored = ckpt.restore_newest(abstract, strict=c.resume == "strict", warn=_log)
  resumed = None
  if restored:
    resumed, run.state, meta = restored
    saved = meta["base"].get("weights_sha256") or meta["base"]["sha256"]  # the latter: an older checkpoint's
    now = run.base["weights_sha256"] if "weights_sha256" in meta["base"] else legacy_sha256(run.base["path"])
    if saved != now:
      raise UserError(f"{workdir}: the checkpoint was trained on base weights {meta['base']['path']} "
                      f"(sha256 {saved[:12]}), not those of {run.base['path']}")
    run.pipeline.set_state(meta["data_state"])
    best_eval = meta.get("best_eval")
    _log(f"resuming {workdir} at step {resumed}")
  writer = metrics_lib.MetricsWriter(files, resumed)
  if distributed.primary():
    with open(os.path.join(files, "config.json"), "w") as f:
      f.write(c.to_json_best_effort(indent=2) + "\n")

  stop = {"signal": None}
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
  peak = metrics_lib.peak_flops(c.peak_flops)
  start = int(jax.device_get(run.state["step"]))
  summary = {"trainable_params": run.trainable_count, "total_params": run.total_count, "resumed_from": resumed}
  from itjax.evals.live import LiveEvaluator
  live_eval = LiveEvaluator(run)
  evals = summary["evals"] = {}  # {step: {suite: SuiteOutput}}: this call's generation evaluations
  evaluating = time.time()
  if start == 0:
    summary["eval_loss_start"] = evaluate(run)
    if summary["eval_loss_start"] is not None:
      writer.write(0, {"eval_loss": summary["eval_loss_start"]})
    if live_eval.suites:
      evals[0] = live_eval(run, 0, writer)
  eval_seconds = time.time() - evaluating if live_eval.suites and start == 0 else 0.0
  bar = tqdm(total=c.steps, initial=start, desc="train", unit="step", disable=not distributed.primary(),
             dynamic_ncols=True)
  timing = None  # (time, steps done) after the first step (with its compilation); () once estimated
  pending = None  # (step, metrics on device): fetched one step late, so dispatch runs ahead of the device
  last_time = time.perf_counter()
  step = start
  try:
    while step < c.steps and stop["signal"] is None:
      batch = global_batch(run, next(run.pipeline), c.microbatches)
      run.state, metrics = run.train_step(run.state, run.frozen, batch)
      step += 1
      if pending is not None:
        last_time = _finish(run, writer, bar, pending, last_time, peak)
      pending = (step, metrics)
      eval_now = bool(c.eval_every) and step % c.eval_every == 0 and step < c.steps
      save_now = step % c.checkpoint_every == 0 or step == c.steps or stop["signal"] is not None
      if step % c.log_every == 0 or eval_now or save_now:
        last_time = _finish(run, writer, bar, pending, last_time, peak)
        pending = None
      if timing is None and bar.n > start:
        timing = (time.time(), bar.n)
      elif timing and bar.n > timing[1]:  # a step without compilation: say once what the whole run will take
        per_step = (time.time() - timing[0]) / (bar.n - timing[1])
        total = time.time() - started + (c.steps - bar.n) * per_step + eval_seconds
        _log(f"expected duration: about {total / 60:.1f} min in all ({c.steps - start} steps at {per_step:.1f} s"
             + (f"; the evaluations before the first step took {eval_seconds / 60:.1f} min and run again after the "
                "last" if eval_seconds else "") + ")")
        timing = ()
      if live_eval.suites and ((c.eval.every and step % c.eval.every == 0) or step == c.steps):
        evals[step] = live_eval(run, step, writer)  # before this step's checkpoint: a resume never repeats it
      eval_loss = evaluate(run) if eval_now else None
      if eval_loss is not None:
        writer.write(step, {"eval_loss": eval_loss})
        bar.set_postfix_str(f"eval loss {eval_loss:.4f}")
      improved = eval_loss is not None and (best_eval is None or eval_loss < best_eval)
      best_eval = eval_loss if improved else best_eval
      if save_now or improved:
        ckpt.save(step, run.state, _meta(run, best_eval), best=improved)
        workdir_lib.push(workdir)  # a bucket workdir gets the metrics that go with the checkpoint
    if pending is not None:
      _finish(run, writer, bar, pending, last_time, peak)
    if stop["signal"] is not None and ckpt.latest_step() != step:  # the signal came after this step's save check
      ckpt.save(step, run.state, _meta(run, best_eval))
  finally:
    bar.close()
    ckpt.wait()
    signal.signal(signal.SIGTERM, previous)
  if stop["signal"] is not None and step < c.steps:
    ckpt.close()
    writer.close()
    workdir_lib.push(workdir)
    _log(f"stopped by signal {stop['signal']} at step {step}; checkpoint saved, re-run the command to resume")
    summary.update(stopped_at=step)
    return summary
  summary["eval_loss_end"] = evaluate(run)
  if summary["eval_loss_end"] is not None:
    writer.write(step, {"eval_loss": summary["eval_loss_end"]})
    if c.keep_best and (best_eval is None or summary["eval_loss_end"] < best_eval):
      best_eval = summary["eval_loss_end"]
      ckpt.save(step, run.state, _meta(run, best_eval), best=True)
      ckpt.wait()
  ckpt.close()
  writer.close()
  summary["plot"] = metrics_lib.plot_losses(files) if distributed.primary() else None
  workdir_lib.push(workdir)
  summary["steps"] = step
  return summary


def _finish(run: Run, writer, bar, pending, last_time: float, peak: float | None) -> float:
  """Fetches a step's metrics (stopping on NaN/Inf), logs them at log_every, advances the bar."""
  step, metrics = pending
  values = {k: float(v) for k, v in jax.device_get(metrics).items()}
  _check_finite(step, values)
  now = time.perf_counter()
  seconds = now - last_time
  steps_done = step - bar.n
  bar.update(steps_done)
  per_step = seconds / max(steps_done, 1)
  c = run.config
  if step % c.log_every == 0 or step == c.steps:
    tokens = c.batch_size * c.max_len
    flops = run.flops_per_token * tokens / per_step
    values.update(step_time=per_step, target_tokens_per_s=values["target_tokens"] / per_step,
                  tokens_per_s=tokens / per_step, tflops=flops / 1e12, mfu=flops / peak if peak else None)
    writer.write(step, values)
    bar.set_postfix_str(f"loss {values['loss']:.4f} lr {values['learning_rate']:.2e} "
                        f"{values['target_tokens_per_s']:.0f} target tok/s")
  return now
