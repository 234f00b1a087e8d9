"""Whether a workdir's checkpoints fit the config about to resume them, compared before anything is restored.

The settings that shape the trained state (method, LoRA rank, alpha, targets and rsLoRA, the extra trainable
patterns, the frozen base's dtype, the base model) must be the ones the checkpoints were written with: a difference
is an error that names each key with its old and new value, never damage. Other settings (steps, learning rate, data,
evaluation) may change between runs. `config.resume = "restart"` moves the old run aside inside the workdir
(WORKDIR/previous/N) and starts over; nothing is deleted. The base model's identity (its weights' sha256) is checked
by the trainer when it restores (itjax/training/loop.py).
"""

from __future__ import annotations

import os
import shutil

import ml_collections

from itjax.errors import UserError
from itjax.io import distributed
from itjax.io import workdir as workdir_lib
from itjax.io.log import get as get_logger

log = get_logger(__name__)

SHAPING = ("method", "lora.rank", "lora.alpha", "lora.targets", "lora.rslora", "trainable", "base_dtype")
RUN_FILES = ("checkpoints", "best", "metrics.jsonl", "config.json", "tensorboard", "loss.png", "evals.png",
             "before_after.png", "eval")  # what a run writes; its inputs (tasks, replay, data) stay


def _value(config: dict, key: str):
  node = config
  for part in key.split("."):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return list(node) if isinstance(node, (list, tuple)) else node


def differences(saved: dict, config: ml_collections.ConfigDict) -> list[tuple[str, object, object]]:
  """(key, checkpoint's value, config's value) for each shaping setting that differs (LoRA keys only for LoRA)."""
  now = config.to_dict()
  keys = [k for k in SHAPING if not k.startswith("lora.") or now["method"] == "lora" == saved.get("method")]
  return [(k, _value(saved, k), _value(now, k)) for k in keys if _value(saved, k) != _value(now, k)]


def _newest_meta(workdir: str) -> dict | None:
  """The newest checkpoint's metadata, or None when it does not read (the restore reports that damage)."""
  from itjax.interop.checkpoint import read_meta
  try:
    return read_meta(workdir)
  except Exception:  # noqa: BLE001 -- orbax raises many kinds; each means the metadata cannot be compared
    return None


def check(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Stops before anything is written when the workdir's checkpoints were trained with other shaping settings;
  config.resume = 'restart' moves the run there aside instead, whatever its settings."""
  if not workdir_lib.has_checkpoints(workdir):
    return
  if config.resume == "restart":
    move_aside(workdir)
    return
  meta = _newest_meta(workdir)
  changed = differences(meta["config"], config) if meta else []
  if not changed:
    return
  said = "; ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changed)
  raise UserError(f"{workdir}: its checkpoints were trained with other settings ({said}); train into another "
                  "--workdir, or set --config.resume=restart to move this run aside (into previous/) and start over")


def move_aside(workdir: str) -> str:
  """Moves the run's own files into WORKDIR/previous/N (the next free N); returns that directory."""
  if workdir_lib.is_remote(workdir):
    raise UserError(f"{workdir}: config.resume=restart moves a run aside in a local workdir only; copy this one "
                    "elsewhere and train into a new workdir")
  n = 1
  while os.path.exists(os.path.join(workdir, "previous", str(n))):
    n += 1
  aside = os.path.join(workdir, "previous", str(n))
  if distributed.primary():
    os.makedirs(aside)
    for name in RUN_FILES:
      if os.path.exists(os.path.join(workdir, name)):
        shutil.move(os.path.join(workdir, name), os.path.join(aside, name))
  distributed.barrier("run moved aside")
  log.info("config.resume=restart: the earlier run of %s moved to %s; starting over", workdir, aside)
  return aside
