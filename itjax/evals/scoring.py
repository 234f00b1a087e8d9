"""Teacher-forced scoring: how likely a model finds given token sequences, and how two models' next-token
distributions differ along them.

Sequences are right-padded into batches of similar length (padding has segment id 0, so it attends to nothing and
nothing attends to it), and one compiled function serves every batch of the same shape; a batch holds up to
TOKENS_PER_BATCH tokens, fewer where the vocabulary is large (its float32 logits stay under LOGIT_BYTES: 1,024
tokens for Gemma's 262,144 entries), and one with fewer sequences than that allows is cut to the next power of two
rows. Only per-sequence sums leave the device; the host adds them in float64.

`nll_after` scores continuations of shared contexts (several answers to one prompt, one neutral prompt before many
answers): each context runs once and the part every context begins with (a chat template's system turn) once, and
the continuations read their keys and values from a cache instead of running the context again.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from itjax.model.generate import bucket_length
from itjax.model.config import ModelConfig
from itjax.model.llama import Transformer, init_cache

TOKENS_PER_BATCH = 4096  # rows x padded length per call: bounds the [B,T,V] logits in memory
SLOTS_PER_BATCH = 2 * TOKENS_PER_BATCH  # nll_after: rows x (cached + new) key/value slots per call
LOGIT_BYTES = 2 ** 30  # and the [B,T,V] float32 logits of one call at most this (a log-softmax and KL hold a few)


def tokens_per_batch(config: ModelConfig) -> int:
  """Tokens one call scores: TOKENS_PER_BATCH, fewer for a vocabulary whose logits would exceed LOGIT_BYTES."""
  return max(64, min(TOKENS_PER_BATCH, LOGIT_BYTES // (4 * config.vocab_size)))


def _log_probs(config: ModelConfig, params, tokens, segments):
  """log p(next token | prefix) over the vocabulary at every position but the last: [B,T-1,V] float32."""
  logits = Transformer(config.replace(remat="none")).apply({"params": params}, tokens, None, segments)
  return jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)


@functools.partial(jax.jit, static_argnums=(0,))
def _nll_sums(config, params, tokens, segments, weights):
  """Per row: sum over weighted positions of -log p(token t+1 | tokens <= t)."""
  logp = _log_probs(config, params, tokens, segments)
  picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  return -(picked * weights).sum(axis=1)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _kl_sums(p_config, p_params, q_config, q_params, tokens, segments, weights):
  """Per row: sum over weighted positions of KL(p || q) between the two models' next-token distributions."""
  logp = _log_probs(p_config, p_params, tokens, segments)
  logq = _log_probs(q_config, q_params, tokens, segments)
  kl = (jnp.exp(logp) * (logp - logq)).sum(axis=-1)
  return (kl * weights).sum(axis=1)


def _batches(sequences: Sequence[Sequence[int]], starts: Sequence[int], pad_id: int, budget: int = TOKENS_PER_BATCH):
  """(indices, tokens, segments, weights) batches of at most `budget` tokens, longest first; weights mark the
  predicted tokens sequences[i][starts[i]:] (position t predicts token t+1)."""
  if len(sequences) != len(starts):
    raise ValueError(f"{len(sequences)} sequences but {len(starts)} starts")
  for seq, start in zip(sequences, starts):
    if not 1 <= start <= len(seq):
      raise ValueError(f"a scored span must start after the first token and within the sequence: start {start}, "
                       f"length {len(seq)}")
  order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
  i = 0
  while i < len(order):
    length = bucket_length(len(sequences[order[i]]))
    rows = max(1, budget // length)
    picked = order[i:i + rows]
    i += len(picked)
    rows = min(rows, 1 << (len(picked) - 1).bit_length())  # a short last batch: the next power of two, not all
    tokens = np.full((rows, length), pad_id, np.int32)
    segments = np.zeros((rows, length), np.int32)
    weights = np.zeros((rows, length - 1), np.float32)
    for r, j in enumerate(picked):
      seq = sequences[j]
      tokens[r, :len(seq)] = seq
      segments[r, :len(seq)] = 1
      weights[r, starts[j] - 1:len(seq) - 1] = 1.0
    yield picked, tokens, segments, weights


@functools.partial(jax.jit, static_argnums=(0,))
def _hidden_means(config, params, tokens, segments):
  """Per row: the mean over its real tokens of the final-normed hidden states [B,D] (float32)."""
  hidden = Transformer(config.replace(remat="none")).apply({"params": params}, tokens, None, segments,
                                                           return_hidden=True)
  real = (segments > 0).astype(jnp.float32)[..., None]
  return (hidden.astype(jnp.float32) * real).sum(axis=1) / jnp.maximum(real.sum(axis=1), 1.0)


def _progress(total: int, desc: str | None):
  from tqdm import tqdm
  return tqdm(total=total, desc=desc, unit="seq", disable=desc is None, dynamic_ncols=True)


def nll(config: ModelConfig, params, sequences: Sequence[Sequence[int]], starts: Sequence[int],
        pad_id: int = 0, desc: str | None = None) -> list[tuple[float, int]]:
  """(summed negative log-likelihood in nats, token count) of each sequence's tokens from `starts[i]` on, each
  predicted from every token before it. `desc` names a progress bar (None: no bar)."""
  out: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
  with _progress(len(sequences), desc) as bar:
    for picked, tokens, segments, weights in _batches(sequences, starts, pad_id, tokens_per_batch(config)):
      sums = np.asarray(jax.device_get(_nll_sums(config, params, tokens, segments, weights)), np.float64)
      for r, j in enumerate(picked):
        out[j] = (float(sums[r]), len(sequences[j]) - starts[j])
      bar.update(len(picked))
  return out


def mean_hidden(config: ModelConfig, params, sequences: Sequence[Sequence[int]], pad_id: int = 0,
                desc: str | None = None) -> np.ndarray:
  """[N,D] float32: each sequence's final hidden states (after the last norm) averaged over its tokens."""
  out = None
  with _progress(len(sequences), desc) as bar:
    for picked, tokens, segments, _ in _batches(sequences, [1] * len(sequences), pad_id):
      means = np.asarray(jax.device_get(_hidden_means(config, params, tokens, segments)), np.float32)
      if out is None:
        out = np.zeros((len(sequences), means.shape[1]), np.float32)
      out[picked] = means[:len(picked)]
      bar.update(len(picked))
  return out if out is not None else np.zeros((0, config.dim), np.float32)


def kl(p_config: ModelConfig, p_params, q_config: ModelConfig, q_params, sequences: Sequence[Sequence[int]],
       starts: Sequence[int], pad_id: int = 0) -> list[tuple[float, int]]:
  """(summed KL(p || q) in nats, token count) over the positions predicting each sequence's tokens from
  `starts[i]` on: p and q see the same prefix, the sequence's own tokens."""
  out: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
  for picked, tokens, segments, weights in _batches(sequences, starts, pad_id, tokens_per_batch(p_config)):
    sums = np.asarray(jax.device_get(_kl_sums(p_config, p_params, q_config, q_params, tokens, segments, weights)),
                      np.float64)
    for r, j in enumerate(picked):
      out[j] = (float(sums[r]), len(sequences[j]) - starts[j])
  return out


# --- continuations of shared contexts --------------------------------------------------------------------------

def _grown(config: ModelConfig, cache, rows, extra: int):
  """The cache's rows `rows` [B] (indices into its batch) with `extra` empty slots after its own; the index points
  at the first of them, so a forward pass writes its keys and values there."""
  axis = 1 if config.scan_layers else 0  # k and v: [L,B,K,S,H] when scanned, else L arrays [B,K,S,H]

  def take(x):
    x = jnp.take(x, rows, axis=axis)
    return jnp.pad(x, [(0, extra) if d == axis + 2 else (0, 0) for d in range(x.ndim)])

  segments = jnp.take(cache["segment_ids"], rows, axis=0)
  return {"k": jax.tree.map(take, cache["k"]), "v": jax.tree.map(take, cache["v"]),
          "segment_ids": jnp.pad(segments, ((0, 0), (0, extra))), "index": jnp.int32(segments.shape[1])}


@functools.partial(jax.jit, static_argnums=(0,))
def _extend(config, params, cache, rows, tokens, positions, segments):
  """The cache's rows `rows`, extended by tokens [B,T] (their keys and values after the cached ones)."""
  model = Transformer(config.replace(remat="none"))
  _, cache = model.apply({"params": params}, tokens, positions, segments,
                         cache=_grown(config, cache, rows, tokens.shape[1]), last_only=True)
  return cache


@functools.partial(jax.jit, static_argnums=(0,))
def _nll_after_sums(config, params, cache, rows, tokens, positions, segments, weights):
  """Per row: the summed -log p(token t+1 | the cached row `rows[b]`, tokens <= t) over weighted positions."""
  logits, _ = Transformer(config.replace(remat="none")).apply(
      {"params": params}, tokens, positions, segments, cache=_grown(config, cache, rows, tokens.shape[1]))
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  return -(picked * weights).sum(axis=1)


def _groups(lengths: dict[int, int], rows_for) -> list[tuple[list[int], int, int]]:
  """(keys, width, rows) batches of the keys of `lengths`, longest first: width is the bucket of their length, and
  the keys of one width are split evenly into batches of at most rows_for(width) rows, all of one shape (a short
  last batch padded), so that a width compiles once."""
  by_width: dict[int, list[int]] = {}
  for key in sorted(lengths, key=lambda k: -lengths[k]):
    by_width.setdefault(bucket_length(max(1, lengths[key])), []).append(key)
  out = []
  for width, keys in by_width.items():
    size = -(-len(keys) // -(-len(keys) // max(1, rows_for(width))))  # the even share of ceil(n / cap) batches
    out += [(keys[i:i + size], width, size) for i in range(0, len(keys), size)]
  return out


def _rows(width: int, rows: int, pieces: list[tuple[Sequence[int], int]], pad_id: int):
  """tokens, positions and segments [rows, width]: piece r's tokens at positions start, start+1, ... from the left
  (the rest padding, segment 0)."""
  tokens = np.full((rows, width), pad_id, np.int32)
  positions = np.zeros((rows, width), np.int32)
  segments = np.zeros((rows, width), np.int32)
  for r, (ids, start) in enumerate(pieces):
    tokens[r, :len(ids)] = ids
    positions[r, :len(ids)] = np.arange(start, start + len(ids))
    segments[r, :len(ids)] = 1
  return tokens, positions, segments


def nll_after(config: ModelConfig, params, contexts: Sequence[Sequence[int]],
              continuations: Sequence[tuple[int, Sequence[int]]], pad_id: int = 0,
              desc: str | None = None) -> list[tuple[float, int]]:
  """(summed negative log-likelihood in nats, token count) of each continuation (c, tokens): its tokens after
  contexts[c] and after each other. The same figures as `nll(contexts[c] + tokens, start=len(contexts[c]))`, for
  less work: the tokens every context begins with run once, each context once, and each continuation reads them
  from a cache. An empty continuation is (0.0, 0)."""
  if any(not len(c) for c in contexts):
    raise ValueError("every context needs at least one token")
  out: list[tuple[float, int]] = [(0.0, 0)] * len(continuations)
  wanted = [i for i, (_, ids) in enumerate(continuations) if len(ids)]
  if not wanted:
    return out
  params = jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, params)  # on device once
  heads = {c: list(contexts[c][:-1]) for c in sorted({continuations[i][0] for i in wanted})}
  first = next(iter(heads.values()))
  shared = 0
  while all(len(h) > shared and h[shared] == first[shared] for h in heads.values()):
    shared += 1
  width = bucket_length(max(1, shared))
  root = _extend(config, params, init_cache(config, 1, 0), np.zeros(1, np.int32),
                 *_rows(width, 1, [(first[:shared], 0)], pad_id))
  by_context: dict[int, list[int]] = {}
  for i in wanted:
    by_context.setdefault(continuations[i][0], []).append(i)
  with _progress(len(wanted), desc) as bar:
    rest = {c: len(h) - shared for c, h in heads.items()}
    budget = tokens_per_batch(config)
    for chunk, w1, rows1 in _groups(rest, lambda w: min(budget // w, SLOTS_PER_BATCH // (width + w))):
      cache = _extend(config, params, root, np.zeros(rows1, np.int32),
                      *_rows(w1, rows1, [(heads[c][shared:], shared) for c in chunk], pad_id))
      slots = width + w1
      row_of = {c: r for r, c in enumerate(chunk)}
      mine = {i: 1 + len(continuations[i][1]) for c in chunk for i in by_context[c]}
      for batch, w2, rows2 in _groups(mine, lambda w: min(budget // w, SLOTS_PER_BATCH // (slots + w))):
        pieces, weights, rows = [], np.zeros((rows2, w2 - 1), np.float32), np.zeros(rows2, np.int32)
        for r, i in enumerate(batch):
          c, ids = continuations[i]
          pieces.append(([contexts[c][-1], *ids], len(contexts[c]) - 1))
          weights[r, :len(ids)] = 1.0
          rows[r] = row_of[c]
        sums = np.asarray(jax.device_get(_nll_after_sums(config, params, cache, rows, *_rows(w2, rows2, pieces,
                                                                                            pad_id), weights)),
                          np.float64)
        for r, i in enumerate(batch):
          out[i] = (float(sums[r]), len(continuations[i][1]))
        bar.update(len(batch))
  return out
