"""Batched generation: one prefill over left-padded prompts, then a compiled decode loop over the KV cache.

Prompts are left-padded to a length bucket (a power of two, at least 16) and the batch is padded to a fixed size, so
one compiled function serves every batch in the same (batch, bucket, max_new_tokens, sampling mode) shape. Layers
are unrolled for decoding (see ModelConfig.scan_layers) and each layer's cache is updated in place. Padding
has segment id 0 and each row's positions start at 0 on its first real token, so a padded row computes what it would
alone. The decode loop is a `lax.while_loop` that stops when every row has produced an end-of-sequence id. Stop
strings are applied to the decoded text afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from itjax.model.config import ModelConfig
from itjax.model.llama import Transformer, init_cache, unstack_layers

MIN_BUCKET = 16
# XLA:CPU's YNNPACK fusions slowed generation: SmolLM2-135M, batch 16, 64 new tokens took 12.0 s with them and 8.7 s
# without, in one process on a 2-core AVX2 machine. The generate function is compiled without them on CPU.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@dataclasses.dataclass(frozen=True)
class Sampling:
  """temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


def bucket_length(n: int, limit: int | None = None) -> int:
  """The padded prompt length for a prompt of n tokens: the next power of two, at least MIN_BUCKET."""
  b = max(MIN_BUCKET, 1 << max(0, n - 1).bit_length())
  return min(b, limit) if limit else b


def sample_logits(logits: jax.Array, rng: jax.Array, temperature: jax.Array, top_p: jax.Array, *,
                  greedy: bool, top_k: int, use_top_p: bool) -> jax.Array:
  """Next token ids [B] from logits [B,V]."""
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if use_top_p:
    desc = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(desc, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
    keep = before < top_p  # always keeps the most likely token
    threshold = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass
class Generated:
  tokens: list[int]  # the new tokens, up to (not including) the end-of-sequence id
  finished: bool  # True when an end-of-sequence id ended it, False when max_new_tokens did


class Generator:
  """Generates from token-id prompts with one model; compiled functions are cached per shape bucket."""

  def __init__(self, config: ModelConfig, params, eos_ids: Sequence[int], pad_id: int = 0):
    if not eos_ids:
      raise ValueError("at least one end-of-sequence id is needed")
    if config.scan_layers:  # decode with unrolled layers: a scanned layer's weights are copied out on every step
      params = unstack_layers(params, config.num_layers)
      config = config.replace(scan_layers=False)
    self.config = config
    self.params = jax.tree.map(jnp.asarray, params)
    self.model = Transformer(config)
    self.eos_ids = np.asarray(sorted(set(int(i) for i in eos_ids)), np.int32)
    self.pad_id = int(pad_id)
    self.traces = 0  # how many times a generate function was traced (one per shape bucket)
    self._fns: dict[tuple, jax.stages.Compiled] = {}

  def _compiled(self, args: tuple, greedy: bool, top_k: int, use_top_p: bool, max_new: int):
    """The generate function compiled for these argument shapes (one per batch size and prompt bucket)."""
    key = (greedy, top_k, use_top_p, max_new, args[1].shape)
    if key not in self._fns:
      fn = functools.partial(self._generate, greedy=greedy, top_k=top_k, use_top_p=use_top_p, max_new=max_new)
      lowered = jax.jit(fn).lower(*args)
      options = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
      try:
        self._fns[key] = lowered.compile(options)
      except Exception:  # an XLA without that option: its defaults
        self._fns[key] = lowered.compile()
    return self._fns[key]

  def _generate(self, params, tokens, positions, segments, rng, temperature, top_p, *, greedy, top_k, use_top_p,
                max_new):
    """tokens/positions/segments [B,P] (left-padded) -> new tokens [B,max_new] and lengths [B]."""
    self.traces += 1
    b, p = tokens.shape
    eos = jnp.asarray(self.eos_ids)
    sample = functools.partial(sample_logits, temperature=temperature, top_p=top_p, greedy=greedy, top_k=top_k,
                               use_top_p=use_top_p)
    cache = init_cache(self.config, b, p + max_new)
    logits, cache = self.model.apply({"params": params}, tokens, positions, segments, cache=cache, last_only=True)
    rng, step_rng = jax.random.split(rng)
    token = sample(logits[:, -1], step_rng)
    done = jnp.isin(token, eos)
    out = jnp.full((b, max_new), self.pad_id, jnp.int32).at[:, 0].set(token)
    lengths = jnp.where(done, 0, 1)
    position = positions[:, -1] + 1

    def cond(state):
      step, _, done, *_ = state
      return (step < max_new) & ~jnp.all(done)

    def body(state):
      step, token, done, position, lengths, out, cache, rng = state
      logits, cache = self.model.apply({"params": params}, token[:, None], position[:, None],
                                       jnp.ones((b, 1), jnp.int32), cache=cache)
      rng, step_rng = jax.random.split(rng)
      nxt = sample(logits[:, -1], step_rng)
      nxt = jnp.where(done, self.pad_id, nxt)
      is_eos = jnp.isin(nxt, eos)
      lengths = lengths + (~done & ~is_eos)
      out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, step))
      return step + 1, nxt, done | is_eos, position + 1, lengths, out, cache, rng

    state = (jnp.int32(1), token, done, position, lengths, out, cache, rng)
    _, _, done, _, lengths, out, _, _ = jax.lax.while_loop(cond, body, state)
    return out, lengths, done

  def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling = Sampling(),
               seed: int = 0, batch_size: int | None = None) -> list[Generated]:
    """Generates for one batch of prompts (padded to `batch_size` rows if given)."""
    if not prompts:
      return []
    if any(len(p) == 0 for p in prompts):
      raise ValueError("empty prompt: every prompt needs at least one token")
    rows = batch_size or len(prompts)
    if len(prompts) > rows:
      raise ValueError(f"{len(prompts)} prompts do not fit a batch of {rows}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > self.config.max_position_embeddings:
      raise ValueError(f"prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the model's "
                       f"max_position_embeddings={self.config.max_position_embeddings}")
    width = bucket_length(longest)
    tokens = np.full((rows, width), self.pad_id, np.int32)
    positions = np.zeros((rows, width), np.int32)
    segments = np.zeros((rows, width), np.int32)
    for i in range(rows):
      prompt = prompts[i] if i < len(prompts) else prompts[0][-1:]  # filler rows: one token, results dropped
      n = len(prompt)
      tokens[i, width - n:] = prompt
      positions[i, width - n:] = np.arange(n)
      segments[i, width - n:] = 1
    args = (self.params, tokens, positions, segments, jax.random.key(seed),
            jnp.float32(max(sampling.temperature, 1e-6)), jnp.float32(sampling.top_p))
    fn = self._compiled(args, sampling.greedy, sampling.top_k, sampling.top_p < 1, max_new_tokens)
    out, lengths, done = fn(*args)
    out, lengths, done = np.asarray(out), np.asarray(lengths), np.asarray(done)
    return [Generated(out[i, :lengths[i]].tolist(), bool(done[i])) for i in range(len(prompts))]


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
  """Cuts text at the earliest occurrence of any stop string."""
  cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
  return text[:cut]


def generate_texts(generator: Generator, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   sampling: Sampling = Sampling(), batch_size: int = 8, seed: int = 0, stop: Sequence[str] = (),
                   progress: bool = True) -> list[str]:
  """Decoded responses for many prompts, in input order. Prompts are sorted by length into batches of a fixed size
  (so batches share shape buckets); a progress bar shows prompts/s and generated tokens/s."""
  from tqdm import tqdm
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  responses: list[str] = [""] * len(prompts)
  generated = 0
  bar = tqdm(total=len(prompts), unit="prompt", disable=not progress, dynamic_ncols=True)
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    outs = generator.generate([prompts[i] for i in chunk], max_new_tokens, sampling,
                              seed=seed + start, batch_size=batch_size)
    for i, out in zip(chunk, outs):
      responses[i] = truncate_at_stop(tokenizer.decode(out.tokens), stop)
      generated += len(out.tokens)
    bar.update(len(chunk))
    elapsed = bar.format_dict["elapsed"] or 1e-9
    bar.set_postfix_str(f"{generated / elapsed:.1f} tok/s")
  bar.close()
  return responses
