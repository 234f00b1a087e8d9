"""The training step: masked next-token loss on packed rows, gradient accumulation over microbatches, one update.

Batches come from itjax.data.pipeline already shifted (inputs, targets, weights); the loss is the sum of the
target tokens' cross-entropies divided by the number of target tokens in the whole batch, so microbatches with
uneven target counts weigh each token the same as one big batch would. The output projection and the
cross-entropy run over chunks of the sequence, with their gradient formed in the same sweep: the full [B, T, V]
float32 logits never exist, and are never recomputed.

With an anchor (config.anchor.weight > 0) the objective is the mean cross-entropy plus weight x the mean
KL(base || tuned) over the anchor's tokens (the targets, or those of replay examples). The base is a second,
gradient-free forward pass: the same frozen params with the LoRA adapters off (plus a frozen copy of whatever base
params train: all of them under full fine-tuning). Its log-softmax is formed in the same chunks as the tuned one,
and the KL's gradient w.r.t. the tuned logits, weight x (softmax(tuned) - softmax(base)), joins the cross-entropy's
in the same sweep. With weight 0 the step is the plain one: no base, no second forward pass.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from itjax.model.lora import flatten, join, unflatten
from itjax.model.config import ModelConfig
from itjax.model.llama import Transformer, output_embedding, softcap

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


def _chunk_kl(logits, e, total, lse, base_logits, kl_weights, scale):
  """Over one chunk: the kl-weighted sum of KL(base || tuned) per position, and its gradient times `scale` w.r.t.
  the tuned logits, scale * kl_weight * (softmax(tuned) - softmax(base)). logits [B,C,V] float32 with e = exp(logits
  - max), total = sum(e) and lse its log-sum-exp (the cross-entropy's), base_logits [B,C,V], kl_weights [B,C]."""
  base_top = jnp.max(base_logits, axis=-1)
  base_e = jnp.exp(base_logits - base_top[..., None])
  base_total = jnp.sum(base_e, axis=-1)
  base_lse = base_top + jnp.log(base_total)
  base_p = base_e / base_total[..., None]
  # log p_base - log p_tuned, with the logits' difference taken first: exact where tuned and base agree
  log_ratio = (base_logits - logits) - (base_lse - lse)[..., None]
  kl = jnp.sum(jnp.sum(base_p * log_ratio, axis=-1) * kl_weights)
  s = scale * kl_weights
  return kl, e * (s / total)[..., None] - base_p * s[..., None]


def _head_forward(hidden, head, targets, weights, chunk, head_grad, anchor=(), cap=None):
  """Sums (loss, hits), and already the gradients of the loss sum w.r.t. hidden (and head, if it trains).

  Each row's weighted positions are moved to its front first (a stable sort), so the chunks past the longest row's
  count hold no target and are skipped: the vocabulary projection runs on the trained tokens, not on every prompt
  token (an assistant-only mask trains a fifth of them in typical instruction data).

  anchor = (base_hidden [B,T,D], base_head [D,V], kl_weights [B,T], scale []): the base model's logits are formed in
  the same chunks, the loss becomes CE sum + scale * KL sum (its gradient included) and the sums are (loss, hits,
  KL sum); positions with a kl weight count as weighted."""
  b, t, d = hidden.shape
  n = t // chunk
  if anchor:
    base_hidden, base_head, kl_weights, scale = anchor
    skip = (weights == 0) & (kl_weights == 0)
    order = jnp.argsort(skip, axis=1, stable=True)
    live = jnp.max(jnp.sum(~skip, axis=1))
  else:
    order = jnp.argsort(weights == 0, axis=1, stable=True)  # [B,T]: weighted positions first, in order
    live = jnp.max(jnp.sum(weights != 0, axis=1))  # chunks from live // chunk on hold no weighted position
  hidden_sorted = jnp.take_along_axis(hidden, order[..., None], axis=1)
  targets, weights = jnp.take_along_axis(targets, order, axis=1), jnp.take_along_axis(weights, order, axis=1)
  extra = ()
  if anchor:
    extra = (_chunks(jnp.take_along_axis(base_hidden, order[..., None], axis=1), n),
             _chunks(jnp.take_along_axis(kl_weights, order, axis=1), n))

  def chunk_head(h, y, w, *base):
    logits = jnp.einsum("bcd,dv->bcv", h, head.astype(h.dtype), preferred_element_type=jnp.float32)
    if cap is not None:  # soft-capped logits (Gemma 2): cap * tanh(raw / cap), whose slope is 1 - tanh^2
      tanh = jnp.tanh(logits / cap)
      logits = cap * tanh
    top = jnp.max(logits, axis=-1)
    e = jnp.exp(logits - top[..., None])
    total = jnp.sum(e, axis=-1)
    lse = top + jnp.log(total)
    target_logit = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    loss = jnp.sum((lse - target_logit) * w)
    hits = jnp.sum((target_logit >= top) * w)
    # d(loss sum)/d(logits) = (softmax - onehot) * weight
    dlogits = e * (w / total)[..., None] - jax.nn.one_hot(y, logits.shape[-1], dtype=e.dtype) * w[..., None]
    sums = (loss, hits)
    if base:
      hb, kw = base
      base_logits = softcap(jnp.einsum("bcd,dv->bcv", hb, base_head.astype(hb.dtype),
                                       preferred_element_type=jnp.float32), cap)
      kl, dkl = _chunk_kl(logits, e, total, lse, base_logits, kw, scale)
      sums, dlogits = (loss + scale * kl, hits, kl), dlogits + dkl
    if cap is not None:
      dlogits = dlogits * (1.0 - tanh * tanh)
    dlogits = dlogits.astype(h.dtype)
    dh = jnp.einsum("bcv,dv->bcd", dlogits, head.astype(h.dtype), preferred_element_type=jnp.float32)
    dhead = jnp.einsum("bcd,bcv->dv", h, dlogits, preferred_element_type=jnp.float32) if head_grad else zero
    return sums, dh.astype(hidden.dtype), dhead

  def no_targets(h, y, w, *base):
    return ((zero,) * (3 if base else 2), jnp.zeros(h.shape, hidden.dtype),
            (jnp.zeros(head.shape, jnp.float32) if head_grad else zero))

  def body(carry, xs):
    i, h, y, w, *base = xs  # [], [B,C,D], [B,C], [B,C] (and the base's [B,C,D], the kl weights [B,C])
    sums, dh, dhead = jax.lax.cond(i * chunk < live, chunk_head, no_targets, h, y, w, *base)
    return (tuple(a + s for a, s in zip(carry[0], sums)), carry[1] + dhead), dh

  zero = jnp.zeros((), jnp.float32)
  dhead0 = jnp.zeros(head.shape, jnp.float32) if head_grad else zero
  (sums, dhead), dh = jax.lax.scan(
      body, ((zero,) * (3 if anchor else 2), dhead0),
      (jnp.arange(n), _chunks(hidden_sorted, n), _chunks(targets, n), _chunks(weights, n), *extra))
  dh = jnp.take_along_axis(_unchunk(dh), jnp.argsort(order, axis=1)[..., None], axis=1)  # back to the positions
  return sums, dh, dhead


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def linear_cross_entropy(hidden: jax.Array, head: jax.Array, targets: jax.Array, weights: jax.Array,
                         chunk: int, cap: float | None = None) -> tuple[jax.Array, jax.Array]:
  """(sum over target tokens of weight * cross-entropy, weighted count of argmax hits) of logits hidden @ head.

  hidden [B,T,D], head [D,V], targets and weights [B,T]. The logits exist one chunk of `chunk` positions at a
  time, in float32; the backward pass is formed in the same sweep (softmax minus one-hot, times the head), so the
  logits are neither stored nor recomputed. `cap`: the logits are soft-capped first (Gemma 2's final_softcap).
  """
  (loss, hits), _, _ = _head_forward(hidden, head, targets, weights, chunk, head_grad=False, cap=cap)
  return loss, hits


def _lce_fwd(hidden, head, targets, weights, chunk, cap):
  head_grad = head.perturbed
  (loss, hits), dh, dhead = _head_forward(hidden.value, head.value, targets.value, weights.value, chunk, head_grad,
                                          cap=cap)
  return (loss, hits), (dh, dhead if head_grad else None)


def _lce_bwd(chunk, cap, res, cotangents):
  dh, dhead = res
  g = cotangents[0]
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    g = jnp.zeros((), jnp.float32)
  dhidden = (dh * g).astype(dh.dtype)
  return dhidden, None if dhead is None else (dhead * g), None, None


linear_cross_entropy.defvjp(_lce_fwd, _lce_bwd, symbolic_zeros=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9))
def anchored_linear_cross_entropy(hidden: jax.Array, head: jax.Array, base_hidden: jax.Array, base_head: jax.Array,
                                  targets: jax.Array, weights: jax.Array, kl_weights: jax.Array, scale: jax.Array,
                                  chunk: int, cap: float | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(sum of weight * cross-entropy + scale * sum of kl_weight * KL(base || tuned), weighted argmax hits, the
  kl-weighted KL sum) for tuned logits hidden @ head and base logits base_hidden @ base_head.

  hidden and base_hidden [B,T,D], head and base_head [D,V], targets, weights and kl_weights [B,T], scale []. Both
  log-softmaxes exist one chunk at a time, in float32, and the gradient is formed in the same sweep, as in
  linear_cross_entropy. Only the first output is differentiable, in hidden and head: the base gets no gradient.
  """
  sums, _, _ = _head_forward(hidden, head, targets, weights, chunk, False, (base_hidden, base_head, kl_weights, scale),
                             cap)
  return sums


def _alce_fwd(hidden, head, base_hidden, base_head, targets, weights, kl_weights, scale, chunk, cap):
  head_grad = head.perturbed
  anchor = (base_hidden.value, base_head.value, kl_weights.value, scale.value)
  sums, dh, dhead = _head_forward(hidden.value, head.value, targets.value, weights.value, chunk, head_grad, anchor,
                                  cap)
  return sums, (dh, dhead if head_grad else None)


def _alce_bwd(chunk, cap, res, cotangents):
  if not isinstance(cotangents[2], jax.custom_derivatives.SymbolicZero):
    raise ValueError("anchored_linear_cross_entropy: the KL sum is reported, not differentiated (its gradient is "
                     "part of the first output's)")
  dhidden, dhead, _, _ = _lce_bwd(chunk, cap, res, cotangents)
  return dhidden, dhead, None, None, None, None, None, None


anchored_linear_cross_entropy.defvjp(_alce_fwd, _alce_bwd, symbolic_zeros=True)


def chunked_cross_entropy(hidden: jax.Array, head: jax.Array, targets: jax.Array, weights: jax.Array,
                          chunk: int, cap: float | None = None) -> tuple[jax.Array, jax.Array]:
  """linear_cross_entropy with a chunk size that divides the length (the whole length if none given fits)."""
  return linear_cross_entropy(hidden, head, targets, weights, _fitting_chunk(chunk, hidden.shape[1]), cap)


def _fitting_chunk(chunk: int, t: int) -> int:
  return chunk if 0 < chunk < t and t % chunk == 0 else t


def anchored_cross_entropy(hidden, head, base_hidden, base_head, targets, weights, kl_weights, scale,
                           chunk: int, cap: float | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """anchored_linear_cross_entropy with a chunk size that divides the length (the whole length if none fits)."""
  return anchored_linear_cross_entropy(hidden, head, base_hidden, base_head, targets, weights, kl_weights,
                                       jnp.asarray(scale, jnp.float32), _fitting_chunk(chunk, hidden.shape[1]), cap)


def make_loss(config: ModelConfig, loss_chunk: int = 256, train: bool = True) -> Callable:
  """loss(trainable, frozen, batch [B,T], rng) -> (summed loss, summed hits); rng drives LoRA dropout."""
  model = Transformer(config)
  dropout = train and config.lora is not None and config.lora.dropout > 0

  def loss(trainable, frozen, batch: Batch, rng):
    params = join(trainable, frozen)
    hidden = model.apply({"params": params}, batch["inputs"], batch["positions"], batch["segment_ids"],
                         return_hidden=True, rngs={"dropout": rng} if dropout else None)
    return chunked_cross_entropy(hidden, output_embedding(config, params), batch["targets"],
                                 batch["weights"].astype(jnp.float32), loss_chunk, config.final_softcap)

  return loss


def make_anchored_loss(config: ModelConfig, loss_chunk: int = 256, on: str = "targets") -> Callable:
  """loss(trainable, (frozen, base), batch [B,T], rng, scale) -> (CE sum + scale * KL sum, (hits, KL sum)).

  The base model is `config` without LoRA, on the frozen params with `base` over them: a frozen copy of the
  trainable params that are not adapters ({} under plain LoRA: the base is the frozen params, adapters off). It
  runs without gradient. The KL(base || tuned) of a position is weighted like its cross-entropy (on='targets'), or
  by batch['anchor'] (on='replay': the trained tokens of replay examples, as itjax.data.pipeline marks them)."""
  model, base_model = Transformer(config), Transformer(config.replace(lora=None))
  dropout = config.lora is not None and config.lora.dropout > 0

  def loss(trainable, frozen, batch: Batch, rng, scale):
    frozen, base = frozen
    params = join(trainable, frozen)
    inputs = (batch["inputs"], batch["positions"], batch["segment_ids"])
    hidden = model.apply({"params": params}, *inputs, return_hidden=True,
                         rngs={"dropout": rng} if dropout else None)
    base_params = unflatten({k: v for k, v in flatten(join(base, frozen)).items()
                             if not k.endswith(("/lora_a", "/lora_b"))})
    base_hidden = jax.lax.stop_gradient(base_model.apply({"params": base_params}, *inputs, return_hidden=True))
    weights = batch["weights"].astype(jnp.float32)
    value, hits, kl = anchored_cross_entropy(
        hidden, output_embedding(config, params), base_hidden,
        jax.lax.stop_gradient(output_embedding(config, base_params)), batch["targets"], weights,
        anchor_weights(batch, on), scale, loss_chunk, config.final_softcap)
    return value, (hits, kl)

  return loss


def anchor_weights(batch: Batch, on: str) -> jax.Array:
  """The weight of each position's KL to the base: its loss weight (on='targets') or batch['anchor'] ('replay')."""
  return batch["weights" if on == "targets" else "anchor"].astype(jnp.float32)


def _sum_microbatches(loss_fn: Callable, trainable, frozen, batch: Batch, rng, num_aux: int = 1):
  """(summed gradients, summed loss, summed aux) of loss_fn -> (loss, aux) over [M, B/M, T] microbatches; aux is
  one scalar, or a tuple of num_aux of them."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def body(acc, xs):
    micro, i = xs
    (loss, aux), grads = grad_fn(trainable, frozen, micro, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, acc, (grads, loss, aux)), None

  aux0 = jnp.zeros((), jnp.float32) if num_aux == 1 else tuple(jnp.zeros((), jnp.float32) for _ in range(num_aux))
  zeros = (jax.tree.map(jnp.zeros_like, trainable), jnp.zeros((), jnp.float32), aux0)
  num_micro = batch["inputs"].shape[0]
  (grads, loss, aux), _ = jax.lax.scan(body, zeros, (batch, jnp.arange(num_micro)))
  return grads, loss, aux


def accumulate(loss_fn: Callable, trainable, frozen, batch: Batch, rng) -> tuple[Any, dict]:
  """Gradients of the mean token loss over a batch of [M, B/M, T] microbatches, and its metrics."""
  grads, loss, hits = _sum_microbatches(loss_fn, trainable, frozen, batch, rng)
  count = jnp.maximum(batch["weights"].astype(jnp.float32).sum(), 1.0)
  grads = jax.tree.map(lambda g: g / count, grads)
  return grads, {"loss": loss / count, "accuracy": hits / count, "target_tokens": count}


def _update(tx: optax.GradientTransformation, lr: optax.Schedule, state: State, rng, grads, metrics: dict):
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics.update(grad_norm=optax.global_norm(grads), learning_rate=lr(state["step"]))
  return {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": rng}, metrics


def make_train_step(config: ModelConfig, tx: optax.GradientTransformation, lr: optax.Schedule,
                    loss_chunk: int = 256, anchor_weight: float = 0.0,
                    anchor_on: str = "targets") -> Callable[..., tuple[State, dict]]:
  """step(state, frozen, batch [M, B/M, T]) -> (next state, metrics); jit it with shardings and donate state.

  With anchor_weight > 0 the step is step(state, frozen, batch, base) (base: see make_anchored_loss), its loss is
  the mean cross-entropy + anchor_weight x the mean KL(base || tuned) over the anchor's tokens (anchor_on), and its
  metrics add that mean KL as kl_to_base. With 0 it is the plain step: the base is never run."""
  if anchor_weight > 0:
    return _anchored_train_step(config, tx, lr, loss_chunk, anchor_weight, anchor_on)
  loss_fn = make_loss(config, loss_chunk)

  def step(state: State, frozen, batch: Batch):
    rng, step_rng = jax.random.split(state["rng"])
    grads, metrics = accumulate(loss_fn, state["params"], frozen, batch, step_rng)
    return _update(tx, lr, state, rng, grads, metrics)

  return step


def _anchored_train_step(config: ModelConfig, tx: optax.GradientTransformation, lr: optax.Schedule, loss_chunk: int,
                         weight: float, on: str) -> Callable:
  loss_fn = make_anchored_loss(config, loss_chunk, on)

  def step(state: State, frozen, batch: Batch, base):
    rng, step_rng = jax.random.split(state["rng"])
    count = jnp.maximum(batch["weights"].astype(jnp.float32).sum(), 1.0)
    kl_count = jnp.maximum(anchor_weights(batch, on).sum(), 1.0)
    scale = weight * count / kl_count  # (CE sum + scale * KL sum) / count = CE mean + weight * KL mean
    grads, loss, (hits, kl) = _sum_microbatches(lambda t, f, b, r: loss_fn(t, f, b, r, scale), state["params"],
                                                (frozen, base), batch, step_rng, num_aux=2)
    grads = jax.tree.map(lambda g: g / count, grads)
    metrics = {"loss": loss / count, "accuracy": hits / count, "target_tokens": count, "kl_to_base": kl / kl_count}
    return _update(tx, lr, state, rng, grads, metrics)

  return step


def make_eval_step(config: ModelConfig, loss_chunk: int = 256) -> Callable:
  """eval(trainable, frozen, batch [B,T]) -> (summed loss, summed hits, target count)."""
  loss_fn = make_loss(config, loss_chunk, train=False)

  def evaluate(trainable, frozen, batch: Batch):
    loss, hits = loss_fn(trainable, frozen, batch, None)
    return loss, hits, batch["weights"].astype(jnp.float32).sum()

  return evaluate
