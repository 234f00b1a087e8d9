"""Which params train: one labelling of every leaf by regexes over its path; LoRA adapters' init and merge.

Paths are '/'-joined keys, e.g. 'layers/attn/q_proj/lora_a' or 'final_norm/scale'. LoRA-only training is the
pattern `.*/lora_(a|b)`, full fine-tuning `.*`, and partial schemes are more patterns (LoRA plus norms, only
attention, ...). `split` cuts params into a trainable and a frozen tree before `jax.grad`, so frozen leaves get no
gradient and no optimizer state at all.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from itjax.errors import UserError
from itjax.model.config import ModelConfig
from itjax.model.llama import lora_a_init, param_shapes

LORA_ONLY = (r".*/lora_(a|b)",)
FULL = (r".*",)


def flatten(tree: dict) -> dict[str, object]:
  return traverse_util.flatten_dict(tree, sep="/")


def unflatten(flat: dict[str, object]) -> dict:
  return traverse_util.unflatten_dict(flat, sep="/")


def is_trainable(path: str, patterns: tuple[str, ...]) -> bool:
  return any(re.fullmatch(p, path) for p in patterns)


def split(params: dict, patterns: tuple[str, ...]) -> tuple[dict, dict]:
  """(trainable, frozen): two nested dicts that together hold every leaf once."""
  flat = flatten(params)
  trainable = {k: v for k, v in flat.items() if is_trainable(k, patterns)}
  if not trainable:
    raise UserError(f"no param matches the trainable patterns {list(patterns)}; paths look like "
                    f"{sorted(flat)[:3]}")
  return unflatten(trainable), unflatten({k: v for k, v in flat.items() if k not in trainable})


def join(trainable: dict, frozen: dict) -> dict:
  return unflatten({**flatten(frozen), **flatten(trainable)})


def count_params(tree: dict) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def init_adapters(config: ModelConfig, rng: jax.Array) -> dict:
  """Only the LoRA leaves of `config` (A random, B zero), without materialising the base."""
  if config.lora is None:
    return {}
  shapes = {k: v for k, v in flatten(param_shapes(config)).items() if k.rsplit("/", 1)[-1] in ("lora_a", "lora_b")}
  out = {}
  for i, (path, s) in enumerate(sorted(shapes.items())):
    if path.endswith("lora_a"):
      out[path] = lora_a_init(jax.random.fold_in(rng, i), s.shape, jnp.float32)
    else:
      out[path] = jnp.zeros(s.shape, jnp.float32)
  return unflatten(out)


def merged_kernel(kernel, a, b, scale: float) -> np.ndarray:
  """W + scale * A @ B for one layer's kernel ([in, out], [in, R], [R, out]), in float64, rounded once to float32."""
  merged = np.asarray(a, np.float64) @ np.asarray(b, np.float64)  # the one float64 temporary of the kernel's size
  merged *= scale
  merged += np.asarray(kernel)
  return merged.astype(np.float32)


def merge_adapters(config: ModelConfig, params: dict) -> tuple[ModelConfig, dict]:
  """(config without LoRA, params with every adapted kernel replaced by W + scale * A @ B), one layer at a time: the
  float64 temporaries are one layer's, and the merged stacks are float32."""
  if config.lora is None:
    return config, params
  flat = flatten(params)
  out = {k: v for k, v in flat.items() if not k.endswith(("/lora_a", "/lora_b"))}
  for path in [k for k in flat if k.endswith("/lora_a")]:
    module = path[:-len("/lora_a")]
    a, b, kernel = flat[path], flat[module + "/lora_b"], flat[module + "/kernel"]
    if kernel.ndim == 3:  # [L, in, out]: scanned layers, merged one at a time
      merged = np.empty(kernel.shape, np.float32)
      for i in range(kernel.shape[0]):
        merged[i] = merged_kernel(kernel[i], a[i], b[i], config.lora.scale)
    else:
      merged = merged_kernel(kernel, a, b, config.lora.scale)
    out[module + "/kernel"] = merged
  return config.replace(lora=None), unflatten(out)
