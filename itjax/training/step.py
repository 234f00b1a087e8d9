"""The training step: masked next-token loss on packed rows, gradient accumulation over microbatches, one update.

Batches come from itjax.data.pipeline already shifted (inputs, targets, weights); the loss is the sum of the
target tokens' cross-entropies divided by the number of target tokens in the whole batch, so microbatches with
uneven target counts weigh each token the same as one big batch would. The output projection and the
cross-entropy run over chunks of the sequence, with their gradient formed in the same sweep: the full [B, T, V]
float32 logits never exist, and are never recomputed.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from itjax.model.lora import join
from itjax.model.config import ModelConfig
from itjax.model.llama import Transformer, output_embedding

# XLA:CPU's YNNPACK elementwise and reduce fusions slow the LoRA step down: on CPU the step uses YNNPACK for its
# matmuls only (measured: experiments/results/code_choices.md).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                        "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.cache
def compiler_options() -> dict | None:
  """The options the training steps are compiled with: CPU_COMPILER_OPTIONS on CPU when this XLA knows them."""
  if jax.default_backend() != "cpu":
    return None
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS)(1.0)
  except Exception:  # an XLA without that option: its defaults
    return None
  return CPU_COMPILER_OPTIONS


Batch = dict[str, jax.Array]  # inputs, targets, weights, segment_ids, positions: [B, T] (or [M, B/M, T])
State = dict[str, Any]  # step, params (the trainable ones), opt_state, rng


def _chunks(x: jax.Array, n: int) -> jax.Array:
  """[B, T, ...] -> [n, B, T/n, ...]."""
  return x.reshape(x.shape[0], n, x.shape[1] // n, *x.shape[2:]).swapaxes(0, 1)


def _unchunk(x: jax.Array) -> jax.Array:
  return x.swapaxes(0, 1).reshape(x.shape[1], -1, *x.shape[3:])


def _head_forward(hidden, head, targets, weights, chunk, head_grad):
  """Loss and hits, and already the gradients of the loss sum w.r.t. hidden (and head, if it trains).

  Each row's weighted positions are moved to its front first (a stable sort), so the chunks past the longest row's
  count hold no target and are skipped: the vocabulary projection runs on the trained tokens, not on every prompt
  token (an assistant-only mask trains a fifth of them in typical instruction data)."""
  b, t, d = hidden.shape
  n = t // chunk
  order = jnp.argsort(weights == 0, axis=1, stable=True)  # [B,T]: weighted positions first, in order
  live = jnp.max(jnp.sum(weights != 0, axis=1))  # chunks from live // chunk on hold no weighted position
  hidden_sorted = jnp.take_along_axis(hidden, order[..., None], axis=1)
  targets, weights = jnp.take_along_axis(targets, order, axis=1), jnp.take_along_axis(weights, order, axis=1)

  def chunk_head(h, y, w):
    logits = jnp.einsum("bcd,dv->bcv", h, head.astype(h.dtype), preferred_element_type=jnp.float32)
    top = jnp.max(logits, axis=-1)
    e = jnp.exp(logits - top[..., None])
    total = jnp.sum(e, axis=-1)
    lse = top + jnp.log(total)
    target_logit = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    loss = jnp.sum((lse - target_logit) * w)
    hits = jnp.sum((target_logit >= top) * w)
    # d(loss sum)/d(logits) = (softmax - onehot) * weight
    dlogits = e * (w / total)[..., None] - jax.nn.one_hot(y, logits.shape[-1], dtype=e.dtype) * w[..., None]
    dlogits = dlogits.astype(h.dtype)
    dh = jnp.einsum("bcv,dv->bcd", dlogits, head.astype(h.dtype), preferred_element_type=jnp.float32)
    dhead = jnp.einsum("bcd,bcv->dv", h, dlogits, preferred_element_type=jnp.float32) if head_grad else zero
    return loss, hits, dh.astype(hidden.dtype), dhead

  def no_targets(h, y, w):
    return zero, zero, jnp.zeros(h.shape, hidden.dtype), (jnp.zeros(head.shape, jnp.float32) if head_grad else zero)

  def body(carry, xs):
    i, h, y, w = xs  # [], [B,C,D], [B,C], [B,C]
    loss, hits, dh, dhead = jax.lax.cond(i * chunk < live, chunk_head, no_targets, h, y, w)
    return (carry[0] + loss, carry[1] + hits, carry[2] + dhead), dh

  zero = jnp.zeros((), jnp.float32)
  dhead0 = jnp.zeros(head.shape, jnp.float32) if head_grad else zero
  (loss, hits, dhead), dh = jax.lax.scan(
      body, (zero, zero, dhead0),
      (jnp.arange(n), _chunks(hidden_sorted, n), _chunks(targets, n), _chunks(weights, n)))
  dh = jnp.take_along_axis(_unchunk(dh), jnp.argsort(order, axis=1)[..., None], axis=1)  # back to the positions
  return loss, hits, dh, dhead


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def linear_cross_entropy(hidden: jax.Array, head: jax.Array, targets: jax.Array, weights: jax.Array,
                         chunk: int) -> tuple[jax.Array, jax.Array]:
  """(sum over target tokens of weight * cross-entropy, weighted count of argmax hits) of logits hidden @ head.

  hidden [B,T,D], head [D,V], targets and weights [B,T]. The logits exist one chunk of `chunk` positions at a
  time, in float32; the backward pass is formed in the same sweep (softmax minus one-hot, times the head), so the
  logits are neither stored nor recomputed.
  """
  loss, hits, _, _ = _head_forward(hidden, head, targets, weights, chunk, head_grad=False)
  return loss, hits


def _lce_fwd(hidden, head, targets, weights, chunk):
  head_grad = head.perturbed
  loss, hits, dh, dhead = _head_forward(hidden.value, head.value, targets.value, weights.value, chunk, head_grad)
  return (loss, hits), (dh, dhead if head_grad else None)


def _lce_bwd(chunk, res, cotangents):
  dh, dhead = res
  g = cotangents[0]
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    g = jnp.zeros((), jnp.float32)
  dhidden = (dh * g).astype(dh.dtype)
  return dhidden, None if dhead is None else (dhead * g), None, None


linear_cross_entropy.defvjp(_lce_fwd, _lce_bwd, symbolic_zeros=True)


def chunked_cross_entropy(hidden: jax.Array, head: jax.Array, targets: jax.Array, weights: jax.Array,
                          chunk: int) -> tuple[jax.Array, jax.Array]:
  """linear_cross_entropy with a chunk size that divides the length (the whole length if none given fits)."""
  t = hidden.shape[1]
  chunk = chunk if 0 < chunk < t and t % chunk == 0 else t
  return linear_cross_entropy(hidden, head, targets, weights, chunk)


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
