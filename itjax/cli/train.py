"""`itjax train` (a config file's run, resumed when re-run) and `itjax export` (a workdir's checkpoint as a Hugging
Face model or a PEFT adapter)."""

from __future__ import annotations

import json
import os

from absl import flags

from itjax.cli import common
from itjax.cli.common import Command
from itjax.errors import InputNotFound, UserError


def workdir(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "Training directory: checkpoints, metrics.jsonl, TensorBoard events, plots.",
                      flag_values=fv)


def define_train(fv: flags.FlagValues) -> None:
  workdir(fv)
  flags.DEFINE_string("coordinator_address", "", "HOST:PORT of process 0 when several processes run one job (also "
                      "--num_processes and --process_id; TPU slices, SLURM and JAX_COORDINATOR_ADDRESS need none).",
                      flag_values=fv)
  flags.DEFINE_integer("num_processes", 0, "How many processes run the job (with --coordinator_address).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("process_id", -1, "This process's index, 0..num_processes-1 (with --coordinator_address).",
                       flag_values=fv)


def cmd_train(f: flags.FlagValues, args: list[str]) -> None:
  from itjax.io import distributed
  from itjax.io import workdir as workdir_lib
  if f.config is None or not f.workdir:
    raise UserError("--config configs/X.py[:ARG] and --workdir DIR are required")
  workdir_lib.check_writable(f.workdir)  # before any work
  distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
  from itjax.training.loop import stop_on_sigterm, train
  with stop_on_sigterm() as stop:  # SIGTERM (preemption, kill): a checkpoint at the end of the step, then exit
    summary = train(f.config, f.workdir, stop=stop)
  summary.pop("evals", None)  # per-example rows; their metrics are in metrics.jsonl
  if distributed.primary():
    print(json.dumps(summary))


def check_workdir(path: str) -> None:
  """A training workdir to read: a local one must be an existing directory (read, never made)."""
  from itjax.io import workdir as workdir_lib
  if workdir_lib.is_remote(path):
    return
  if not os.path.exists(path):
    raise InputNotFound(f"--workdir {path}: no such directory (expected a training workdir)")
  if not os.path.isdir(path):
    raise UserError(f"--workdir {path} is a file; expected a training workdir (a directory)")


def define_export(fv: flags.FlagValues) -> None:
  workdir(fv)
  flags.DEFINE_string("format", None, "hf (a Hugging Face model directory, any LoRA merged in) or "
                      "peft (the LoRA adapter alone).", flag_values=fv)
  common.out(fv, "The output directory.")
  flags.DEFINE_integer("step", None, "The checkpoint step (default: the latest).", flag_values=fv)
  common.dtype(fv, "The saved weights' dtype (hf).")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out directory.", flag_values=fv)


def cmd_export(f: flags.FlagValues, args: list[str]) -> None:
  from itjax.interop import export
  if not f.workdir or not f.out or f.format not in ("hf", "peft"):
    raise UserError("--workdir DIR, --format hf|peft and --out OUT are required")
  check_workdir(f.workdir)
  if f.format == "hf":
    out = export.export_hf(f.workdir, f.out, f.step, f.dtype, f.overwrite)
  else:
    out = export.export_peft(f.workdir, f.out, f.step, f.overwrite)
  print(out)


COMMANDS = (
    Command("train", "trains a config file's run into a workdir (re-run to resume)",
            "--config configs/X.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]\n"
            "[--coordinator_address HOST:PORT --num_processes N --process_id I]   (re-run to resume)",
            define_train, cmd_train, config="A training config file (configs/*.py[:ARG]); --config.KEY=VALUE "
            "overrides one of its settings."),
    Command("export", "a workdir's checkpoint as a Hugging Face model or a PEFT adapter",
            "--workdir DIR --format hf|peft --out OUT [--step N] [--dtype float32|bfloat16] [--overwrite]",
            define_export, cmd_export),
)
