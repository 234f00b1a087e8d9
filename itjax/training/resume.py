"""Whether a workdir's checkpoints fit the config about to resume them, compared before anything is restored.

The settings that shape the trained state (method, LoRA rank, alpha, targets and rsLoRA, the extra trainable
patterns, the frozen base's dtype, the base model's weights) must be the ones the checkpoints were written with: a
difference is an error that names each key with its old and new value, never damage, and it stops the run before
anything is written. Other settings (steps, learning rate, evaluation, the KL anchor: it changes the objective, not
the state) may change between runs. The data may not either, but its fingerprint is known only once it is read: the
trainer compares it when it restores, still before it writes (itjax/training/loop.py). `config.resume = "restart"`
moves the old run aside inside the workdir (WORKDIR/previous/N) and starts over; nothing is deleted.
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
DATA = ("data", "tasks", "replay", "max_len", "batch_size", "seed")  # what the batches are made from
RUN_FILES = ("checkpoints", "best", "metrics.jsonl", "config.json", "tensorboard", "loss.png", "evals.png",
             "before_after.png", "eval", "evals")  # what a run writes; its inputs (tasks, replay, data) stay


def _value(config: dict, key: str):
  node = config
  for part in key.split("."):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return list(node) if isinstance(node, (list, tuple)) else node


def differences(saved: dict, config: ml_collections.ConfigDict, lora: bool = True) -> list[tuple[str, object, object]]:
  """(key, checkpoint's value, config's value) for each shaping setting that differs (LoRA keys only for LoRA, and
  only when `lora`: an adapter to start from sets them later)."""
  now = config.to_dict()
  keys = [k for k in SHAPING if not k.startswith("lora.") or lora and now["method"] == "lora" == saved.get("method")]
  return [(k, _value(saved, k), _value(now, k)) for k in keys if _value(saved, k) != _value(now, k)]


def _newest_meta(workdir: str) -> dict | None:
  """The metadata of the newest checkpoint whose metadata reads, or None (the restore reports that damage)."""
  from itjax.interop.checkpoint import checkpoint_steps, read_meta
  for step in sorted(checkpoint_steps(workdir), reverse=True):
    try:
      return read_meta(workdir, step)
    except Exception:  # noqa: BLE001 -- orbax raises many kinds; each means this step's metadata cannot be compared
      continue
  return None


def base_difference(saved: dict, source: str | None) -> tuple[str, object, object] | None:
  """('model', old, new) when the base model at `source` has other weights than the checkpoints' base."""
  from itjax.interop.checkpoint import weights_sha256
  old = saved.get("weights_sha256")
  if old is None:
    raise UserError("its checkpoints were written by an earlier itjax without the base's weights hash; train into "
                    "a new workdir")
  if source is not None:
    from itjax.io import demo_model
    source = demo_model.resolve(source)
  if not source or workdir_lib.is_remote(source) or not os.path.exists(source):
    return None  # a missing model is the loader's to report; a bucket's is compared when the trainer restores
  new = weights_sha256(source)
  if new == old:
    return None
  return ("model", f"{saved.get('path')} (weights sha256 {old[:12]})", f"{os.path.abspath(source)} (weights sha256 "
          f"{new[:12]})")


def _flat(node, prefix: str = "") -> dict:
  if not isinstance(node, dict):
    return {prefix: list(node) if isinstance(node, (list, tuple)) else node}
  return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}.{key}" if prefix else key).items()}


def data_differences(saved_config: dict, config: ml_collections.ConfigDict) -> str:
  """What changed in the settings the training batches are made from, for a run whose data fingerprint differs
  from its checkpoints': 'KEY old -> new; ...', or the files' contents when no setting changed."""
  old, new = _flat({k: saved_config.get(k) for k in DATA}), _flat({k: config.to_dict().get(k) for k in DATA})
  changed = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
  return "; ".join(changed) or "the same settings, but the data files' contents changed"


def data_mismatch(workdir: str, saved_config: dict, config: ml_collections.ConfigDict) -> UserError:
  return UserError(f"{workdir}: its checkpoints were trained on other data ({data_differences(saved_config, config)})"
                   "; train into another --workdir, or set --config.resume=restart to move this run aside (into "
                   "previous/) and start over")


def check(config: ml_collections.ConfigDict, workdir: str, source: str | None = None) -> None:
  """Stops before anything is written when the workdir's checkpoints were trained with other shaping settings or
  another base (the weights at `source`); config.resume = 'restart' moves the run there aside instead, whatever its
  settings."""
  if not workdir_lib.has_checkpoints(workdir):
    return
  if config.resume == "restart":
    move_aside(workdir)
    return
  meta = _newest_meta(workdir)
  if not meta:
    return
  try:
    changed = differences(meta["config"], config, lora=not config.init_adapter)
    changed += [d for d in [base_difference(meta["base"], source)] if d]
  except UserError as e:
    raise UserError(f"{workdir}: {e}") from None
  if not changed:
    return
  said = "; ".join(f"{k} {old!r} -> {new!r}" if k != "model" else f"model {old} -> {new}" for k, old, new in changed)
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
