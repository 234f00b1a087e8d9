"""The training step: masked next-token loss on packed rows, gradient accumulation over microbatches, one update.

Batches come from itjax.data.pipeline already shifted (inputs, targets, weights); the loss is the sum of the
target tokens' cross-entropies divided by the number of target tokens in the whole batch, so microbatches with
uneven target counts weigh each token the same as one big batch would. The output projection is applied in
chunks of the sequence under jax.checkpoint: the full [B, T, V] float32 logits never exist at once, in the forward
or the backward pass.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from itjax.lora import join
from itjax.model.config import ModelConfig
from itjax.model.llama import Transformer, output_embedding

Batch = dict[str, jax.Array]  # inputs, targets, weights, segment_ids, positions: [B, T] (or [M, B/M, T])
State = dict[str, Any]  # step, params (the trainable ones), opt_state, rng


def chunked_cross_entropy(hidden: jax.Array, head: jax.Array, targets: jax.Array, weights: jax.Array,
                          chunk: int) -> tuple[jax.Array, jax.Array]:
  """(sum of weighted token losses, weighted count of argmax hits) for hidden [B,T,D] and head [D,V]."""
  b, t, d = hidden.shape
  chunk = chunk if 0 < chunk < t and t % chunk == 0 else t
  n = t // chunk
  split = lambda x: x.reshape(b, n, chunk, *x.shape[2:]).swapaxes(0, 1)  # [n, B, C, ...]

  @jax.checkpoint
  def one(h, y, w):
    logits = jnp.einsum("bcd,dv->bcv", h, head.astype(h.dtype), preferred_element_type=jnp.float32)
    target_logit = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    loss = (jax.nn.logsumexp(logits, axis=-1) - target_logit) * w
    hit = (jnp.argmax(logits, axis=-1) == y) * w
    return loss.sum(), hit.sum()

  def body(carry, xs):
    loss, hit = one(*xs)
    return (carry[0] + loss, carry[1] + hit), None

  zero = jnp.zeros((), jnp.float32)
  (loss, hits), _ = jax.lax.scan(body, (zero, zero), (split(hidden), split(targets), split(weights)))
  return loss, hits


def make_loss(config: ModelConfig, loss_chunk: int = 256, train: bool = True) -> Callable:
  """loss(trainable, frozen, batch [B,T], rng) -> (summed loss, summed hits); rng drives LoRA dropout."""
  model = Transformer(config)
  dropout = train and config.lora is not None and config.lora.dropout > 0

  def loss(trainable, frozen, batch: Batch, rng):
    params = join(trainable, frozen)
    hidden = model.apply({"params": params}, batch["inputs"], batch["positions"], batch["segment_ids"],
                         return_hidden=True, rngs={"dropout": rng} if dropout else None)
    return chunked_cross_entropy(hidden, output_embedding(config, params), batch["targets"],
                                 batch["weights"].astype(jnp.float32), loss_chunk)

  return loss


def accumulate(loss_fn: Callable, trainable, frozen, batch: Batch, rng) -> tuple[Any, dict]:
  """Gradients of the mean token loss over a batch of [M, B/M, T] microbatches, and its metrics."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def body(acc, xs):
    micro, i = xs
    (loss, hits), grads = grad_fn(trainable, frozen, micro, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, acc, (grads, loss, hits)), None

  zeros = (jax.tree.map(jnp.zeros_like, trainable), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
  num_micro = batch["inputs"].shape[0]
  (grads, loss, hits), _ = jax.lax.scan(body, zeros, (batch, jnp.arange(num_micro)))
  count = jnp.maximum(batch["weights"].astype(jnp.float32).sum(), 1.0)
  grads = jax.tree.map(lambda g: g / count, grads)
  return grads, {"loss": loss / count, "accuracy": hits / count, "target_tokens": count}


def make_train_step(config: ModelConfig, tx: optax.GradientTransformation, lr: optax.Schedule,
                    loss_chunk: int = 256) -> Callable[[State, Any, Batch], tuple[State, dict]]:
  """step(state, frozen, batch [M, B/M, T]) -> (next state, metrics); jit it with shardings and donate state."""
  loss_fn = make_loss(config, loss_chunk)

  def step(state: State, frozen, batch: Batch):
    rng, step_rng = jax.random.split(state["rng"])
    grads, metrics = accumulate(loss_fn, state["params"], frozen, batch, step_rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics.update(grad_norm=optax.global_norm(grads), learning_rate=lr(state["step"]))
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": rng}, metrics

  return step


def make_eval_step(config: ModelConfig, loss_chunk: int = 256) -> Callable:
  """eval(trainable, frozen, batch [B,T]) -> (summed loss, summed hits, target count)."""
  loss_fn = make_loss(config, loss_chunk, train=False)

  def evaluate(trainable, frozen, batch: Batch):
    loss, hits = loss_fn(trainable, frozen, batch, None)
    return loss, hits, batch["weights"].astype(jnp.float32).sum()

  return evaluate
