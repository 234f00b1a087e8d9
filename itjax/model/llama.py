"""The decoder as pure-functional Flax Linen modules: Llama's, with the Qwen3 and Gemma 2/3 differences as config
(q/k norms, post-norms with (1 + scale), GeGLU, scaled embeddings, soft-capping, sliding and full layers; see
ModelConfig). The module stays in llama.py, the family it began with.

Shapes: B batch, T query length, S key/value length (cache slots), L layers, N query heads, K key/value heads,
G = N // K query heads per key/value head, H head dim, D model dim, F mlp dim, V vocab, R LoRA rank.

Params are a plain nested dict (`model.apply({'params': params}, ...)` is the only way in). By default layers are
scanned with `nn.scan`, so every per-layer param carries a leading [L] axis; with `scan_layers=False` they are
unrolled into `layers_0 .. layers_{L-1}` (`unstack_layers` converts), which decoding uses. Every param and major
activation carries logical axis names; the rules that map them to mesh axes live in one table elsewhere.

The attention mask is built from slot indices and segment ids: a query sees a key when the key's slot is not later
than its own, both belong to the same non-zero segment, and (with a sliding window) the key is recent enough; a model
of both sliding and full layers builds both masks once and each layer picks its own. Segment id 0 marks padding.
This one rule serves training on packed rows (positions restart per segment) and decoding from a KV cache with
left-padded prompts.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from itjax.model.config import LoraSpec, ModelConfig

Array = jax.Array
# {'k', 'v': [L,B,K,S,H] (scanned) or L-tuples of [B,K,S,H] (unrolled), 'segment_ids': [B,S],
#  'index': [] (the next slot of every row) or [B] (one per row)}
Cache = dict[str, Any]
_NEG_INF = -1e30
_INIT = nn.initializers.normal(stddev=0.02)


def rope_inv_freq(config: ModelConfig, local: bool = False) -> np.ndarray:
  """Inverse RoPE frequencies [H/2], float32, with the config's scaling applied (as transformers computes them);
  `local`: a sliding layer's, from rope_local_theta without scaling where the config sets one (Gemma 3)."""
  h = config.head_dim
  local = local and config.rope_local_theta is not None
  theta = config.rope_local_theta if local else config.rope_theta
  inv = (1.0 / (np.float32(theta) ** (np.arange(0, h, 2, dtype=np.float32) / np.float32(h))))
  inv = inv.astype(np.float32)
  rs = config.rope_scaling if not local else None
  if rs is None:
    return inv
  if rs.kind == "linear":
    inv = inv / np.float32(rs.factor)
  elif rs.kind == "llama3":
    old = rs.original_max_position_embeddings
    low_wavelen, high_wavelen = old / rs.low_freq_factor, old / rs.high_freq_factor
    wavelen = 2 * np.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / rs.factor, inv)
    smooth = (old / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
    smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    inv = np.where(medium, smoothed, scaled).astype(np.float32)
  return inv


def apply_rope(x: Array, positions: Array, inv_freq: np.ndarray) -> Array:
  """Rotates x [B,T,n,H] by positions [B,T] (half-split layout, as HF Llama)."""
  freqs = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)  # [B,T,H/2]
  cos, sin = jnp.cos(freqs)[:, :, None, :], jnp.sin(freqs)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attention_mask(q_segment: Array, kv_segment: Array, q_offset: Array | int,
                   sliding_window: int | None) -> Array:
  """Boolean mask [B,T,S] from query segments [B,T] at slots q_offset..q_offset+T-1 and key segments [B,S].

  q_offset is one slot for every row, or one per row [B] (rows of a decoding batch at different lengths)."""
  t, s = q_segment.shape[1], kv_segment.shape[1]
  q_slot = jnp.reshape(q_offset, (-1, 1, 1)) + jnp.arange(t)[None, :, None]  # [1 or B,T,1]
  k_slot = jnp.arange(s)[None, None, :]  # [1,1,S]
  visible = k_slot <= q_slot
  if sliding_window is not None:
    visible &= k_slot > q_slot - sliding_window
  same = (q_segment[:, :, None] == kv_segment[:, None, :]) & (kv_segment[:, None, :] != 0)
  return visible & same


def write_slots(buffer: Array, update: Array, index: Array | int, axis: int) -> Array:
  """buffer [B,...,S,...] with update [B,...,T,...] written at slot `index` along `axis`: one slot for every row,
  or one per row [B]. Written in place where XLA can (the cache is never copied)."""
  if jnp.ndim(index) == 0:
    start = [0] * buffer.ndim
    start[axis] = index
    return jax.lax.dynamic_update_slice(buffer, update.astype(buffer.dtype), start)

  def row(b, u, i):
    start = [0] * b.ndim
    start[axis - 1] = i
    return jax.lax.dynamic_update_slice(b, u, start)
  return jax.vmap(row)(buffer, update.astype(buffer.dtype), index)


def lora_a_init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
  """LoRA A [..., in, R]: uniform in +-1/sqrt(in), the bound of PEFT's kaiming_uniform(a=sqrt(5)) default."""
  bound = shape[-2] ** -0.5
  return jax.random.uniform(key, shape, dtype, -bound, bound)


@jax.custom_vjp
def lora_matmul(x: Array, x_drop: Array, kernel: Array, a: Array, b: Array) -> Array:
  """x @ kernel + (x_drop @ a) @ b for x, x_drop [..., in], kernel [in, out], a [in, R], b [R, out] (pre-scaled).

  The same value autodiff would differentiate, with a hand-written backward pass: A's gradient is formed as
  (dXA^T X)^T, whose large operand keeps its row-major layout. XLA:CPU otherwise transposes the activations inside
  an elementwise fusion, which made the LoRA backward pass about twice as slow.
  """
  return _lora_fwd(x, x_drop, kernel, a, b)[0]


def _lora_fwd(x, x_drop, kernel, a, b):
  xa = jnp.einsum("...d,dr->...r", x_drop, a)
  y = jnp.einsum("...d,df->...f", x, kernel) + jnp.einsum("...r,rf->...f", xa, b)
  return y, (x, x_drop, kernel, a, b, xa)


def _lora_bwd(res, dy):
  x, x_drop, kernel, a, b, xa = res
  n = dy.ndim - 1
  lead = "abcdefgh"[:n]
  dxa = jnp.einsum("...f,rf->...r", dy, b)
  db = jnp.einsum(f"{lead}r,{lead}f->rf", xa, dy)
  da = jnp.einsum(f"{lead}r,{lead}d->rd", dxa, x_drop).T
  dkernel = jnp.einsum(f"{lead}d,{lead}f->df", x, dy)  # dead code (removed by XLA) unless the kernel trains
  dx = jnp.einsum("...f,df->...d", dy, kernel)
  dx_drop = jnp.einsum("...r,dr->...d", dxa, a)
  return dx, dx_drop, dkernel, da, db


lora_matmul.defvjp(_lora_fwd, _lora_bwd)


class Dense(nn.Module):
  """y = x @ kernel (+ bias), kernel [in, out] with logical axes; plus a LoRA update where `lora` targets it."""
  features: int
  axes: tuple[str, str]
  use_bias: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  lora: LoraSpec | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.with_logical_partitioning(_INIT, self.axes),
                        (x.shape[-1], self.features), self.param_dtype)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    path = "/".join(self.scope.path) + "/kernel"
    if self.lora is not None and any(re.fullmatch(t, path) for t in self.lora.targets):
      r = self.lora.rank
      a = self.param("lora_a", nn.with_logical_partitioning(lora_a_init, (self.axes[0], "lora_rank")),
                     (x.shape[-1], r), jnp.float32)  # [in, R]
      b = self.param("lora_b", nn.with_logical_partitioning(nn.initializers.zeros, ("lora_rank", self.axes[1])),
                     (r, self.features), jnp.float32)  # [R, out]
      x_drop = x
      if self.lora.dropout > 0 and self.has_rng("dropout"):
        x_drop = nn.Dropout(self.lora.dropout, deterministic=False)(x)
      y = lora_matmul(x, x_drop, kernel, a.astype(self.dtype), (b * self.lora.scale).astype(self.dtype))
    else:
      y = jnp.einsum("...d,df->...f", x, kernel)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[1:]),
                        (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class RMSNorm(nn.Module):
  """x / rms(x) over the last axis, times scale (Llama: rounded to dtype first), or times (offset + scale) in
  float32 (Gemma, whose scales start at 0)."""
  eps: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  offset: float = 0.0

  @nn.compact
  def __call__(self, x: Array) -> Array:
    init = nn.initializers.zeros if self.offset else nn.initializers.ones
    scale = self.param("scale", nn.with_logical_partitioning(init, ("norm",)), (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    if self.offset:
      return (y * (self.offset + scale.astype(jnp.float32))).astype(self.dtype)
    return scale.astype(self.dtype) * y.astype(self.dtype)


def _norm(c: ModelConfig, name: str) -> RMSNorm:
  return RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype, c.norm_offset, name=name)


def softcap(x: Array, cap: float | None) -> Array:
  """cap * tanh(x / cap) (Gemma 2's attention scores and logits); x itself without a cap."""
  return x if cap is None else cap * jnp.tanh(x / cap)


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, positions: Array, mask: Array, cached: tuple[Array, Array] | None,
               cache_index: Array | int, inv_freq) -> tuple[Array, tuple[Array, Array] | None]:
    """x [B,T,D], positions [B,T], mask [B,T,S]; cached = this layer's cache (keys, values [B,K,S,H]) or None;
    inv_freq [H/2] this layer's RoPE frequencies.

    With a cache, this step's keys and values are first written into it at cache_index (a slot, or one per row;
    in place, so the cache is never copied) and the queries attend over all S slots; the updated layer cache is
    returned. Without one, S = T.
    """
    c = self.config
    b, t, _ = x.shape
    n, k, h = c.num_heads, c.num_kv_heads, c.head_dim
    dense = dict(dtype=c.dtype, param_dtype=c.param_dtype, lora=c.lora)
    q = Dense(n * h, ("embed", "q_heads"), c.qkv_bias, name="q_proj", **dense)(x).reshape(b, t, n, h)
    kk = Dense(k * h, ("embed", "kv_heads"), c.qkv_bias, name="k_proj", **dense)(x).reshape(b, t, k, h)
    vv = Dense(k * h, ("embed", "kv_heads"), c.qkv_bias, name="v_proj", **dense)(x).reshape(b, t, k, h)
    if c.qk_norm:
      q, kk = _norm(c, "q_norm")(q), _norm(c, "k_norm")(kk)
    q = nn.with_logical_constraint(apply_rope(q, positions, inv_freq), ("batch", "length", "heads", "head_dim"))
    kk = apply_rope(kk, positions, inv_freq).transpose(0, 2, 1, 3)  # [B,K,T,H], the cache layout
    vv = vv.transpose(0, 2, 1, 3)
    if cached is not None:
      kk, vv = write_slots(cached[0], kk, cache_index, 2), write_slots(cached[1], vv, cache_index, 2)
      cached = (kk, vv)
    kk = nn.with_logical_constraint(kk, ("batch", "kv_heads", "length", "head_dim"))
    # Queries grouped by their key/value head: [B,K,G*T,H] (g major), so both products are plain batched matmuls.
    scale = (c.query_pre_attn_scalar or h) ** -0.5
    q = q.reshape(b, t, k, n // k, h).transpose(0, 2, 3, 1, 4).reshape(b, k, -1, h) * jnp.asarray(scale, c.dtype)
    scores = jnp.einsum("bkqh,bksh->bkqs", q, kk.astype(c.dtype), preferred_element_type=jnp.float32)
    scores = softcap(scores, c.attn_softcap)
    mask = jnp.tile(mask, (1, n // k, 1))[:, None]  # [B,1,G*T,S]
    probs = jax.nn.softmax(jnp.where(mask, scores, _NEG_INF), axis=-1).astype(c.dtype)
    probs = checkpoint_name(probs, "attention_probs")
    out = jnp.einsum("bkqs,bksh->bkqh", probs, vv.astype(c.dtype))  # [B,K,G*T,H]
    out = out.reshape(b, k, n // k, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n * h)
    out = Dense(c.dim, ("q_heads", "embed"), c.out_bias, name="o_proj", **dense)(out)
    return out, cached


class MLP(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    dense = dict(use_bias=c.mlp_bias, dtype=c.dtype, param_dtype=c.param_dtype, lora=c.lora)
    gate = Dense(c.mlp_dim, ("embed", "mlp"), name="gate_proj", **dense)(x)
    up = Dense(c.mlp_dim, ("embed", "mlp"), name="up_proj", **dense)(x)
    act = jax.nn.silu(gate) if c.activation == "silu" else jax.nn.gelu(gate, approximate=True)
    hidden = nn.with_logical_constraint(act * up, ("batch", "length", "mlp"))
    return Dense(c.dim, ("mlp", "embed"), name="down_proj", **dense)(hidden)


class Block(nn.Module):
  """One pre-norm decoder layer (with post-norms too for Gemma): x [B,T,D] -> (x, this layer's updated cache or
  None). Under nn.scan, x is the carry and the layer's cache slice (and whether it is a sliding layer) the scanned
  inputs. `masks` is (full, sliding): a model of both kinds of layers picks one per layer."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, cached: tuple[Array, Array] | None, sliding, positions: Array,
               masks: tuple[Array, Array | None], cache_index: Array | int):
    c = self.config
    if c.mixed_layers:  # sliding: this layer's flag, a bool (unrolled) or a traced [] (scanned)
      pick = (lambda a, b: b if sliding else a) if isinstance(sliding, bool) else (  # noqa: E731
          lambda a, b: jnp.where(sliding, b, a))
      mask = pick(masks[0], masks[1])
      inv_freq = pick(jnp.asarray(rope_inv_freq(c)), jnp.asarray(rope_inv_freq(c, local=True)))
    else:
      mask, inv_freq = masks[0], rope_inv_freq(c, local=c.sliding_layers[0])
    h, cached = Attention(c, name="attn")(_norm(c, "attn_norm")(x), positions, mask, cached, cache_index, inv_freq)
    x = x + (_norm(c, "post_attn_norm")(h) if c.post_norms else h)
    h = MLP(c, name="mlp")(_norm(c, "mlp_norm")(x))
    x = x + (_norm(c, "post_mlp_norm")(h) if c.post_norms else h)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    return x, cached


class Transformer(nn.Module):
  """tokens [B,T] -> logits [B,T,V] (float32), plus the updated cache when one is given."""
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens: Array, positions: Array | None = None, segment_ids: Array | None = None,
               cache: Cache | None = None, last_only: bool = False, return_hidden: bool = False):
    """With return_hidden, the final-normed hidden states [B,T,D] (compute dtype) instead of logits: a training
    loss can then apply the output projection chunk by chunk (see `output_embedding`)."""
    c = self.config
    b, t = tokens.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    if segment_ids is None:
      segment_ids = jnp.ones((b, t), jnp.int32)
    embedding = self.param("embedding", nn.with_logical_partitioning(_INIT, ("vocab", "embed")),
                           (c.vocab_size, c.dim), c.param_dtype)
    x = jnp.take(embedding, tokens, axis=0)  # [B,T,D]
    if c.embed_scale:  # the factor in the params' dtype, as transformers rounds it
      x = x * jnp.asarray(c.dim ** 0.5, x.dtype)
    x = x.astype(c.dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    if cache is None:
      index, kv_segments, cached = 0, segment_ids, None
    else:  # slots at and after index still have segment id 0 until written, so the mask hides them
      index = cache["index"]  # [] or [B]
      kv_segments = write_slots(cache["segment_ids"], segment_ids.astype(jnp.int32), index, 1)
      cached = (cache["k"], cache["v"])
    sliding = c.sliding_layers
    if c.mixed_layers:  # [B,T,S] each
      masks = (attention_mask(segment_ids, kv_segments, index, None),
               attention_mask(segment_ids, kv_segments, index, c.sliding_window))
    else:
      masks = (attention_mask(segment_ids, kv_segments, index, c.sliding_window if sliding[0] else None), None)

    block = Block
    if c.remat != "none":
      policy = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                "attention": jax.checkpoint_policies.save_anything_except_these_names("attention_probs")}[c.remat]
      block = nn.remat(Block, policy=policy, prevent_cse=not c.scan_layers)
    if c.scan_layers:
      layers = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                       in_axes=(0, 0, nn.broadcast, nn.broadcast, nn.broadcast), length=c.num_layers,
                       metadata_params={nn.PARTITION_NAME: "layers"})
      flags = jnp.asarray(sliding)  # [L]
      x, cached = layers(c, name="layers")(x, cached, flags, positions, masks, index)  # cached: [L,B,K,S,H] x2
    else:  # the cache holds tuples of per-layer arrays
      layer_caches = []
      for i in range(c.num_layers):
        layer_cache = None if cached is None else (cached[0][i], cached[1][i])
        x, layer_cache = block(c, name=f"layers_{i}")(x, layer_cache, sliding[i], positions, masks, index)
        layer_caches.append(layer_cache)
      if cached is not None:
        cached = tuple(zip(*layer_caches))
    if last_only:
      x = x[:, -1:]
    x = _norm(c, "final_norm")(x)
    if return_hidden:
      if not c.tie_embeddings:  # create the head param all the same, so the params are complete
        self.param("lm_head", nn.with_logical_partitioning(_INIT, ("embed", "vocab")), (c.dim, c.vocab_size),
                   c.param_dtype)
      return x
    if c.tie_embeddings:
      logits = jnp.einsum("btd,vd->btv", x, embedding.astype(c.dtype), preferred_element_type=jnp.float32)
    else:
      head = self.param("lm_head", nn.with_logical_partitioning(_INIT, ("embed", "vocab")),
                        (c.dim, c.vocab_size), c.param_dtype)
      logits = jnp.einsum("btd,dv->btv", x, head.astype(c.dtype), preferred_element_type=jnp.float32)
    logits = nn.with_logical_constraint(softcap(logits, c.final_softcap), ("batch", "length", "vocab"))
    if cache is None:
      return logits
    return logits, {"k": cached[0], "v": cached[1], "segment_ids": kv_segments, "index": index + t}


def output_embedding(config: ModelConfig, params: dict) -> Array:
  """The output projection [D,V]: the lm_head, or the transposed embedding when tied."""
  return params["embedding"].T if config.tie_embeddings else params["lm_head"]


def init_cache(config: ModelConfig, batch: int, length: int, dtype: Any = None) -> Cache:
  """An empty KV cache of `length` slots (segment id 0 everywhere, so nothing is visible yet)."""
  dtype = dtype or config.dtype
  shape = (batch, config.num_kv_heads, length, config.head_dim)
  def zeros():
    if config.scan_layers:
      return jnp.zeros((config.num_layers,) + shape, dtype)
    return tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))

  return {"k": zeros(), "v": zeros(),
          "segment_ids": jnp.zeros((batch, length), jnp.int32), "index": jnp.zeros((), jnp.int32)}


def unstack_layers(params: dict, num_layers: int) -> dict:
  """Stacked params (scan_layers=True) -> the unrolled layout (layers_0 .. layers_{L-1})."""
  out = {k: v for k, v in params.items() if k != "layers"}
  for i in range(num_layers):
    out[f"layers_{i}"] = jax.tree.map(lambda a: a[i], params["layers"])
  return out


def _init_boxed(config: ModelConfig, rng: Array) -> dict:
  """Transformer.init: variables with their params boxed in logical-axis metadata."""
  return Transformer(config).init(rng, jnp.zeros((1, 2), jnp.int32))


def init_params(config: ModelConfig, rng: Array) -> dict:
  """Random params (plain nested dict), e.g. for tests and training from scratch."""
  return nn.meta.unbox(_init_boxed(config, rng))["params"]


def param_shapes(config: ModelConfig) -> dict:
  """Every param's shape and dtype (jax.ShapeDtypeStruct leaves), computed without allocating anything."""
  return nn.meta.unbox(jax.eval_shape(lambda: _init_boxed(config, jax.random.key(0))))["params"]


def param_axes(config: ModelConfig) -> dict:
  """The logical axis names of every param, as a pytree of PartitionSpec-like tuples (no compute)."""
  return nn.get_partition_spec(jax.eval_shape(lambda: _init_boxed(config, jax.random.key(0))))["params"]
