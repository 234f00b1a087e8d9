"""`setup(config, workdir) -> Run`: a prepared run (model, data, mesh, state and compiled steps), ready to step.

The only module that puts model, data, optimizer and sharding together:

  prepare (config copy, generated files, base model)
    -> data: tokenized sources -> Pipeline (this host's rows of each global batch), validation batches
    -> params: base + adapters, cut into trainable and frozen, placed on the mesh by their logical axes
    -> state {step, params, opt_state, rng} and the jitted train and eval steps
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from itjax.data import augment, dataset
from itjax.data.pipeline import Pipeline
from itjax.errors import UserError
from itjax.interop.checkpoint import weights_sha256
from itjax.io.log import get as get_logger
from itjax.model import lora as lora_lib
from itjax.model.llama import param_axes, param_shapes
from itjax.training import config as config_lib
from itjax.training import metrics as metrics_lib
from itjax.training import optim, sharding
from itjax.training.prepare import check_batch_split, prepare  # noqa: F401 (check_batch_split: tests)
from itjax.training.step import compiler_options, make_eval_step, make_train_step

log = get_logger(__name__)


@dataclasses.dataclass
class Run:
  """Everything a training run holds besides the loop."""
  config: ml_collections.ConfigDict  # the run's own copy (see prepare)
  workdir: str  # where checkpoints go (a local directory or a bucket)
  files: str  # the local directory of the other files (metrics, plots, tasks)
  model_config: object
  tokenizer: object
  state: dict  # step, params (trainable), opt_state, rng
  frozen: dict
  train_step: object  # (state, frozen, batch) -> (state, metrics)
  eval_step: object  # (params, frozen, batch) -> (loss sum, correct, target count)
  pipeline: Pipeline
  validation: list
  mesh: object
  batch_sharding: object
  eval_sharding: object
  base: dict  # {'path', 'weights_sha256'}
  report: object  # what the data files held, used, skipped and cut
  flops_per_token: float
  # Full fine-tuning whose evaluations compare with the base: the base's params as loaded (the trainable params move
  # away from them); None otherwise (under LoRA the base is the frozen params with the adapters off).
  reference: dict | None = None

  @property
  def trainable_count(self) -> int:
    return lora_lib.count_params(self.state["params"])

  @property
  def total_count(self) -> int:
    return self.trainable_count + lora_lib.count_params(self.frozen)

  def next_batch(self) -> dict:
    """The pipeline's next host rows [B/H, T] as global arrays [M, B/M, T] split over ('data', 'fsdp')."""
    m = self.config.microbatches
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v.reshape(m, v.shape[0] // m, v.shape[1]))
            for k, v in next(self.pipeline).items()}

  def validation_loss(self, batches: list | None = None) -> float | None:
    """Mean loss per target token over the validation batches (or the given ones); None without any."""
    batches = self.validation if batches is None else batches
    if not batches:
      return None
    loss = count = 0.0
    for b in batches:
      batch = {k: jax.make_array_from_process_local_data(self.eval_sharding, v) for k, v in b.items()}
      l, _, n = jax.device_get(self.eval_step(self.state["params"], self.frozen, batch))
      loss, count = loss + float(l), count + float(n)
    return loss / max(count, 1.0)

  def meta(self, best_eval: float | None) -> dict:
    """What a checkpoint stores beside the state: data position, base identity, config, trainable names."""
    return {"data_state": self.pipeline.get_state(), "base": self.base, "config": json.loads(self.config.to_json()),
            "model_config": dataclasses.asdict(self.model_config),
            "trainable": sorted(lora_lib.flatten(self.state["params"])), "best_eval": best_eval}


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


def load_data(config: ml_collections.ConfigDict, files: str, tokenizer) -> tuple[Pipeline, list, object]:
  """(the training pipeline, the validation batches, the data report) from data.train and data.validation."""
  drop = tuple(t.strip() for t in config.data.drop_types.split(",") if t.strip())
  d = config.data
  augmenter = augment.Augmenter(augment.check(d.augment, d.augment_rate), d.augment_rate, d.augment_seed)
  sources, report = dataset.load_sources(config_lib.data_paths(config, "train", files), tokenizer,
                                         data_options(config), drop, augmenter if d.augment else None)
  if d.augment:
    log.info("data.augment: %s", augmenter.summary())
    if not augmenter.counts["task records"]:
      raise UserError("config.data.augment: data.train has no task records to perturb (records with a 'verifier', "
                      "as itjax make-tasks or config.tasks writes them)")
  anchored = config_lib.anchor_files(config, files)
  for source in sources:
    source.anchor = os.path.normpath(source.name) in anchored
  if drop:
    log.info("data.drop_types: left out %s of the %s records of data.train (%s)", f"{report.left_out:,}",
             f"{report.records:,}", ", ".join(f"{t} {report.left_out_by_type[t]:,}" for t in drop))
  pipeline = Pipeline(sources, config.max_len, config.batch_size, config.seed, pack=config.data.pack,
                      pad_id=tokenizer.pad_id)
  report.packing_efficiency = pipeline.efficiency(0)
  if len(sources) > 1:
    log.info("data mix per epoch: %s", ", ".join(f"{os.path.basename(name)} {n:,} examples ({100 * share:.0f}% of "
                                                 f"trained tokens)" for name, n, share in pipeline.mix()))
  validation = []
  if config.data.validation:
    validation = eval_batches(config, config_lib.data_paths(config, "validation", files), tokenizer)
  return pipeline, validation, report


def place_params(config: ml_collections.ConfigDict, mcfg, model, adapters: dict | None, mesh) -> tuple[dict, dict]:
  """(trainable, frozen): the base plus adapters (fresh unless imported), cut by config.trainable and the method,
  each leaf placed on the mesh by its logical axes."""
  if adapters is None:
    adapters = lora_lib.init_adapters(mcfg, jax.random.fold_in(jax.random.PRNGKey(config.seed), 1))
  params = lora_lib.join(adapters, model.params)
  patterns = (lora_lib.LORA_ONLY if mcfg.lora else lora_lib.FULL) + tuple(config.trainable)
  trainable, frozen = lora_lib.split(params, patterns)
  if mcfg.lora is not None and config.base_dtype != "float32":
    frozen = jax.tree.map(lambda x: np.asarray(x).astype(jnp.dtype(config.base_dtype)), frozen)
  missing = set(lora_lib.flatten(param_shapes(mcfg))) - set(lora_lib.flatten(params))
  if missing:
    raise UserError(f"the model is missing params {sorted(missing)[:5]}")
  axes = param_axes(mcfg)
  place = lambda tree: jax.device_put(tree, sharding.tree_shardings(mesh, axes, tree))
  return place(trainable), place(frozen)


def anchor_base(config: ml_collections.ConfigDict, trainable: dict) -> dict | None:
  """What the anchor's base takes beside the frozen params (None without an anchor): a frozen copy, in base_dtype and
  with the same shardings, of the trainable params that are not adapters. Under LoRA there are none (the base is the
  frozen params with the adapters off); under method 'full' it is every param. Its memory is logged."""
  if not config.anchor.weight > 0:
    return None
  dtype = jnp.dtype(config.base_dtype)
  flat = {k: v for k, v in lora_lib.flatten(trainable).items() if not k.endswith(("/lora_a", "/lora_b"))}
  base = {k: jnp.copy(v).astype(dtype) for k, v in flat.items()}  # its own buffers: the state's are donated
  if not base:
    log.info("anchor: the base is the frozen params with the adapters off (no copy)")
    return {}
  total = sum(x.nbytes for x in base.values())
  per_device = sum(x.addressable_shards[0].data.nbytes for x in base.values())
  log.info("anchor: the base keeps a frozen copy of the %s params that train, as they start: %.1f MB in %s (%.1f MB "
           "per device)", f"{lora_lib.count_params(base):,}", total / 1e6, dtype.name, per_device / 1e6)
  return lora_lib.unflatten(base)


class BoundStep:
  """The jitted anchored step(state, frozen, batch, base) as step(state, frozen, batch), with the base bound."""

  def __init__(self, jitted, base: dict):
    self.jitted, self.base = jitted, base

  def __call__(self, state, frozen, batch):
    return self.jitted(state, frozen, batch, self.base)

  def lower(self, state, frozen, batch):
    return self.jitted.lower(state, frozen, batch, self.base)


def compile_steps(config: ml_collections.ConfigDict, mcfg, trainable: dict, frozen: dict, mesh) -> dict:
  """The initial state and the jitted steps, with shardings: optimizer moments follow their params; the state is
  donated to each step. With an anchor the train step has the base bound (anchor_base)."""
  lr = optim.schedule(config.learning_rate, config.steps, config.warmup_steps, config.lr_decay,
                      config.final_lr_fraction)
  tx = optim.optimizer(trainable, lr, config.weight_decay, config.adam_b1, config.adam_b2, config.adam_eps,
                       config.clip_norm or None)
  replicated = sharding.replicated(mesh)
  state_sh = {"step": replicated, "params": jax.tree.map(lambda x: x.sharding, trainable),
              "opt_state": optim.state_shardings(tx, trainable, replicated), "rng": replicated}
  state = {"step": jnp.zeros((), jnp.int32), "params": trainable,
           "opt_state": jax.jit(tx.init, out_shardings=state_sh["opt_state"])(trainable),
           "rng": jax.random.PRNGKey(config.seed)}
  frozen_sh = jax.tree.map(lambda x: x.sharding, frozen)
  batch_sh, eval_sh = sharding.batch_sharding(mesh, leading=1), sharding.batch_sharding(mesh)
  base = anchor_base(config, trainable)
  in_sh = (state_sh, frozen_sh, batch_sh) + (() if base is None else (jax.tree.map(lambda x: x.sharding, base),))
  step = make_train_step(mcfg, tx, lr, config.loss_chunk, config.anchor.weight, config.anchor.on)
  train_step = jax.jit(sharding.with_rules(step, mesh), in_shardings=in_sh, out_shardings=(state_sh, replicated),
                       donate_argnums=(0,), compiler_options=compiler_options())
  if base is not None:
    train_step = BoundStep(train_step, base)
  eval_step = jax.jit(sharding.with_rules(make_eval_step(mcfg, config.loss_chunk), mesh),
                      in_shardings=(state_sh["params"], frozen_sh, eval_sh), out_shardings=replicated,
                      compiler_options=compiler_options())
  return {"state": jax.device_put(state, state_sh), "train_step": train_step, "eval_step": eval_step,
          "batch_sharding": batch_sh, "eval_sharding": eval_sh}


def setup(config: ml_collections.ConfigDict, workdir: str, model=None, data: list[dict] | None = None,
          devices=None) -> Run:
  """Prepares the workdir, loads model (or takes `model`, a LoadedModel) and data (`data`: records as dicts instead
  of config.data.train), builds the mesh over `devices` (default: all), the state and the compiled steps."""
  prepared = prepare(config, workdir, model, data, num_devices=len(devices or jax.devices()))
  config, files, model = prepared.config, prepared.files, prepared.model
  mcfg = config_lib.training_model_config(config, model.config)
  pipeline, validation, report = load_data(config, files, model.tokenizer)
  mesh = sharding.make_mesh(tuple(config.mesh), devices)  # its shape was checked by check_batch_split
  trainable, frozen = place_params(config, mcfg, model, prepared.adapters, mesh)
  steps = compile_steps(config, mcfg, trainable, frozen, mesh)
  flops = metrics_lib.train_flops_per_token(mcfg, param_shapes(mcfg), set(lora_lib.flatten(trainable)),
                                            config.max_len)
  base = {"path": os.path.abspath(model.source), "weights_sha256": weights_sha256(model.source)}
  reference = None  # a host copy: the trainable params are donated to each step, whatever buffers they share
  if mcfg.lora is None and _compares_with_base(config):
    reference = jax.tree.map(lambda x: np.array(x, copy=True), model.params)
  return Run(config, workdir, files, mcfg, model.tokenizer, steps["state"], frozen, steps["train_step"],
             steps["eval_step"], pipeline, validation, mesh, steps["batch_sharding"], steps["eval_sharding"], base,
             report, flops, reference)


def _compares_with_base(config: ml_collections.ConfigDict) -> bool:
  from itjax.evals import registry
  return any("base" in registry.get(name).live_roles for name in config.eval.suites)
