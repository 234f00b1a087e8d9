"""Teacher-forced scoring: how likely a model finds given token sequences, and how two models' next-token
distributions differ along them.

Sequences are right-padded into batches of similar length (padding has segment id 0, so it attends to nothing and
nothing attends to it), and one compiled function serves every batch of the same shape; a batch holds up to
TOKENS_PER_BATCH tokens, and one with fewer sequences than that allows is cut to the next power of two rows. Only
per-sequence sums leave the device; the host adds them in float64.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from itjax.model.generate import bucket_length
from itjax.model.config import ModelConfig
from itjax.model.llama import Transformer

TOKENS_PER_BATCH = 4096  # rows x padded length per call: bounds the [B,T,V] logits in memory


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


def _batches(sequences: Sequence[Sequence[int]], starts: Sequence[int], pad_id: int):
  """(indices, tokens, segments, weights) batches, longest first; weights mark the predicted tokens
  sequences[i][starts[i]:] (position t predicts token t+1)."""
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
    rows = max(1, TOKENS_PER_BATCH // length)
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
    for picked, tokens, segments, weights in _batches(sequences, starts, pad_id):
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
  for picked, tokens, segments, weights in _batches(sequences, starts, pad_id):
    sums = np.asarray(jax.device_get(_kl_sums(p_config, p_params, q_config, q_params, tokens, segments, weights)),
                      np.float64)
    for r, j in enumerate(picked):
      out[j] = (float(sums[r]), len(sequences[j]) - starts[j])
  return out
