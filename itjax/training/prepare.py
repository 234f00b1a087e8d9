"""What a run needs before its first step: a checked copy of the config, the workdir's generated files (tasks,
self-replay answers, data given as records) and the base model, with a PEFT adapter to start from if one is named.

Each step is done once per workdir: a resumed run finds the files and reuses them. The caller's config is never
changed; `prepare` returns the run's own copy (an imported adapter's rank, alpha and targets replace the config's).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections

from itjax.errors import UserError
from itjax.io import atomic, distributed
from itjax.io.log import get as get_logger
from itjax.io import workdir as workdir_lib
from itjax.training import config as config_lib
from itjax.training import resume
from itjax.training import sharding, task_data

log = get_logger(__name__)


@dataclasses.dataclass
class Prepared:
  config: ml_collections.ConfigDict  # the run's own copy
  files: str  # the local directory of the run's files (a bucket workdir's mirror)
  model: object  # itjax.interop.loading.LoadedModel
  adapters: dict | None  # imported LoRA params, or None for fresh ones


def model_source(config: ml_collections.ConfigDict) -> str:
  """config.model, a built-in model's name fetched to its file."""
  from itjax.io import demo_model
  return demo_model.resolve(config.model)


def write_records(files: str, records: list[dict]) -> str:
  """Training records given as objects, kept in WORKDIR/data/train.jsonl so that a resumed run reads the same; a
  file already there with other records is an error, not overwritten."""
  if not records:
    raise UserError("data: no training records given")
  path = os.path.join(files, "data", "train.jsonl")
  if distributed.primary():
    atomic.write_records(path, records, "training records", "another workdir")
  return path


def write_replay(config: ml_collections.ConfigDict, files: str, model) -> dict:
  """The base model's own answers to config.replay.n prompts in WORKDIR/replay (itjax distill --self), resumed
  where a run stopped; a finished file costs only its reading."""
  from itjax.curate.curate import counts_text
  from itjax.curate.distill import Options, self_replay
  r = config.replay
  summary = self_replay(r.prompts, config_lib.replay_path(files), model,
                        Options(batch_size=r.batch_size, max_new_tokens=r.max_new_tokens, limit=r.n, seed=r.seed,
                                progress=distributed.primary()))
  rejected = counts_text(summary["rejected_by_reason"])
  if not summary["accepted"]:
    raise UserError(f"config.replay: none of the base's {summary['records']} answers was kept (rejected: "
                    f"{rejected}); raise replay.max_new_tokens or give other replay.prompts")
  log.info("self-replay: %d of %d answers kept (rejected: %s), mixed into data.train at weight %s",
              summary["accepted"], summary["records"], rejected, r.weight)
  return summary


def import_adapter(config: ml_collections.ConfigDict, model_config) -> dict:
  """config.init_adapter's LoRA params; its rank, alpha, rsLoRA and targets replace the config's (the run's copy)."""
  from itjax.interop.export import read_peft_adapter
  spec, adapters = read_peft_adapter(config.init_adapter, model_config)
  config.lora.rank, config.lora.alpha, config.lora.rslora = spec.rank, spec.alpha, spec.rslora
  config.lora.targets = spec.targets
  log.info("starting from the adapter %s: rank %d, alpha %s, rslora %s, targets %s", config.init_adapter,
              spec.rank, spec.alpha, spec.rslora, spec.targets)
  return adapters


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


def prepare(config: ml_collections.ConfigDict, workdir: str, model=None, data: list[dict] | None = None,
            num_devices: int = 1) -> Prepared:
  """Checks the config (and that its batch splits over `num_devices`), writes what the workdir lacks and loads the
  base (`model`, a LoadedModel, if given)."""
  config = config.copy_and_resolve_references()
  if data is not None:
    config.data.train = "{workdir}/data/train.jsonl"
  config_lib.validate(config, model_given=model is not None)
  source = model.source if model is not None else config.model
  if distributed.primary():
    workdir_lib.lock(workdir)  # one run per workdir (an existing one: before the checks below may move a run aside)
  resume.check(config, workdir, source)  # before anything of the run is written
  files = workdir_lib.prepare(workdir)  # the run's files: the workdir, or a bucket workdir's local mirror
  if distributed.primary():
    workdir_lib.lock(workdir)  # a new one, now that it exists
  if data is not None:
    write_records(files, data)
    workdir_lib.share(workdir, "data")
  task_data.write(config, workdir, files)
  config_lib.check_data_files(config, files)
  check_batch_split(config, num_devices, jax.process_count())
  if model is None:
    from itjax.interop.loading import load_model
    model = load_model(model_source(config))
  task_data.refine(config, workdir, files, model)
  if config.replay.n > 0 and distributed.primary():
    write_replay(config, files, model)
  workdir_lib.share(workdir, "replay")
  adapters = None
  if config.init_adapter:
    adapters = import_adapter(config, model.config)
    resume.check(config, workdir, model.source)  # the adapter's LoRA settings, against the checkpoints'
  return Prepared(config, files, model, adapters)
