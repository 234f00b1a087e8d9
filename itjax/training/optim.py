"""The optimizer: AdamW with warmup + cosine or linear decay, global-norm clipping and a weight-decay mask.

It only ever sees the trainable tree (itjax.model.lora.split), so frozen params have no optimizer state.
"""

from __future__ import annotations

import re

import jax
import optax

from itjax.errors import UserError
from itjax.model.lora import flatten, unflatten

# No weight decay on norm scales and biases (nor on anything matching these) unless the config says otherwise.
NO_DECAY = (r".*/scale", r".*/bias")


def schedule(learning_rate: float, steps: int, warmup_steps: int, decay: str = "cosine",
             final_fraction: float = 0.0) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine or linear decay to final_fraction * learning_rate (or constant)."""
  warmup = optax.linear_schedule(0.0, learning_rate, max(1, warmup_steps))
  rest = max(1, steps - warmup_steps)
  end = learning_rate * final_fraction
  if decay == "cosine":
    after = optax.cosine_decay_schedule(learning_rate, rest, alpha=final_fraction)
  elif decay == "linear":
    after = optax.linear_schedule(learning_rate, end, rest)
  elif decay == "constant":
    after = optax.constant_schedule(learning_rate)
  else:
    raise UserError(f"schedule decay must be cosine, linear or constant, got {decay!r}")
  return optax.join_schedules([warmup, after], [warmup_steps]) if warmup_steps > 0 else after


def decay_mask(trainable: dict, no_decay: tuple[str, ...] = NO_DECAY) -> dict:
  return unflatten({k: not any(re.fullmatch(p, k) for p in no_decay) for k in flatten(trainable)})


def optimizer(trainable: dict, lr: optax.Schedule, weight_decay: float, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-8, clip_norm: float | None = 1.0,
              no_decay: tuple[str, ...] = NO_DECAY) -> optax.GradientTransformation:
  chain = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
  chain.append(optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                           mask=decay_mask(trainable, no_decay)))
  return optax.chain(*chain)


def state_shardings(tx: optax.GradientTransformation, trainable: dict, scalar) -> object:
  """The shardings of tx's state for `trainable` (placed arrays): a leaf shaped like a param (AdamW's moments) is
  split as that param is, anything else (step counts) gets `scalar`. Without this, jit(tx.init) leaves the
  moments replicated: every device would hold all of them."""
  abstract = jax.eval_shape(tx.init, trainable)
  param_shardings = jax.tree.map(lambda x: x.sharding, trainable)
  return optax.tree_map_params(tx, lambda _, s: s, abstract, param_shardings,
                               transform_non_params=lambda _: scalar)
