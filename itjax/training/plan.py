"""Will a training config fit? Param shapes, their shardings on the mesh and a per-device memory estimate, computed
without devices or weights (jax.eval_shape), so large-model configs can be checked on a laptop.

The estimate counts, per device: the frozen params (base_dtype), the trainable params with their float32 gradient
and two AdamW moments, and the activations one microbatch keeps for the backward pass under the config's remat
policy (per layer and token: about 6 D + 3 F values saved, plus the attention probabilities when they are not
recomputed), plus the output projection's float32 chunk of logits. It is an estimate for planning, not a bound.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from itjax.model import lora as lora_lib
from itjax.training import sharding
from itjax.training.config import training_model_config
from itjax.model.config import ModelConfig
from itjax.model.llama import param_axes, param_shapes

GB = 1024 ** 3


def plan(config, model_config: ModelConfig, num_devices: int) -> dict:
  """Checks every param's sharding against the mesh (raising for one that does not divide) and estimates memory."""
  mcfg = training_model_config(config, model_config)
  sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(tuple(config.mesh), num_devices)))
  shapes, axes = lora_lib.flatten(param_shapes(mcfg)), lora_lib.flatten(param_axes(mcfg))
  patterns = (lora_lib.LORA_ONLY if mcfg.lora else lora_lib.FULL) + tuple(config.trainable)
  frozen_bytes = trainable_bytes = 0.0
  trainable = frozen = 0
  for path, s in shapes.items():
    spec = sharding.spec(tuple(axes[path]), sizes, s.shape, path)
    split = math.prod(math.prod(sizes[a] for a in ((d,) if isinstance(d, str) else d)) for d in spec if d)
    per_device = s.size / split
    if lora_lib.is_trainable(path, patterns):
      trainable += s.size
      trainable_bytes += per_device * 4 * 4  # float32 param, gradient, two AdamW moments
    else:
      frozen += s.size
      dtype = config.base_dtype if mcfg.lora else "float32"
      frozen_bytes += per_device * jnp.dtype(dtype).itemsize
  rows = config.batch_size // config.microbatches / (sizes["data"] * sizes["fsdp"])
  tokens = rows * config.max_len
  act = jnp.dtype(config.compute_dtype).itemsize
  d, f, n, t = mcfg.dim, mcfg.mlp_dim, mcfg.num_heads, config.max_len
  per_layer = {"none": tokens * (6 * d + 3 * f) * act + rows * n * t * t * act,
               "attention": tokens * (6 * d + 3 * f) * act,
               "dots": tokens * (4 * d + 2 * f) * act,
               "full": tokens * d * act}[config.remat]
  activations = mcfg.num_layers * per_layer + rows * config.loss_chunk * mcfg.vocab_size * 4 * 3
  total = frozen_bytes + trainable_bytes + activations
  return {"mesh": sizes, "params": trainable + frozen, "trainable": trainable,
          "frozen_gb": frozen_bytes / GB, "trainable_and_optimizer_gb": trainable_bytes / GB,
          "activations_gb": activations / GB, "total_gb": total / GB}
