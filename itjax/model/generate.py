"""Generation with continuous batching: prompts are prefilled one at a time into free slots of a shared KV cache,
and a compiled decode loop advances all slots together, each at its own cache index.

A prompt is left-padded to a length bucket (16, 32, 64, then multiples of 32), so one compiled prefill serves every
prompt of that bucket whatever the slots and cache length of the call (a small compiled copy puts its cache into the
shared one); the decode loop is compiled once per (slots, cache length, sampling mode). When a row
produces an end-of-sequence id (or reaches max_new_tokens) the loop returns to the host, which hands the slot to the
next prompt while the other rows keep their caches. Layers are unrolled for decoding (see ModelConfig.scan_layers)
and each layer's cache is updated in place. Padding has segment id 0 and each row's positions start at 0 on its
first real token, so a row computes what it would alone; sampling draws per row from (seed, prompt, step), so
results do not depend on which prompts share a batch. Stop strings are applied to the decoded text afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from itjax.errors import UserError
from itjax.model.config import ModelConfig
from itjax.model.llama import Transformer, init_cache, unstack_layers

MIN_BUCKET = 16
# Above 64 tokens buckets grow by 32, not by doubling: the work of a prefill and of every decode step's attention
# (over the whole cache) grows with the padded length (measured: experiments/results/code_choices.md).
BUCKET_STEP = 32
# XLA:CPU's YNNPACK fusions slow generation down; the generate functions are compiled without them on CPU.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@dataclasses.dataclass(frozen=True)
class Sampling:
  """temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0:
      raise UserError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise UserError(f"top_k must be >= 0, got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise UserError(f"top_p must be in (0, 1], got {self.top_p}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


def bucket_length(n: int, limit: int | None = None) -> int:
  """The padded prompt length for a prompt of n tokens: the next power of two from MIN_BUCKET up to 64, then the next
  multiple of BUCKET_STEP."""
  b = max(MIN_BUCKET, 1 << max(0, n - 1).bit_length()) if n <= 64 else -(-n // BUCKET_STEP) * BUCKET_STEP
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


@dataclasses.dataclass
class Timing:
  """Where a generate call's time went (seconds, measured on the host around each compiled call)."""
  prefill_s: float = 0.0  # prompts in: prefill and the first token, per prompt summed
  decode_s: float = 0.0  # decode chunks
  decode_tokens: int = 0  # tokens sampled by decode steps (first tokens come from prefill)
  first_token_s: list[float] = dataclasses.field(default_factory=list)  # per prompt: prefill + first token


# Compiled functions of every Generator in this process, by (model config, end ids, pad id, function and shapes,
# argument shapes, dtypes and shardings): generators of the same model (the base and a merged model, the replay's
# and the evaluation's) compile each program once.
_COMPILED: dict[tuple, object] = {}


def _signature(args: tuple) -> tuple:
  leaves, tree = jax.tree.flatten(args)
  return tree, tuple((np.shape(x), getattr(x, "dtype", type(x)), getattr(x, "sharding", None)) for x in leaves)


class Generator:
  """Generates from token-id prompts with one model over a fixed set of slots (continuous batching).

  Each prompt is prefilled alone into a free slot of a shared KV cache ([slots, K, S, H] per layer); a compiled
  decode loop then advances every occupied slot one token per step, each at its own cache index, and returns to
  the host as soon as a row finishes, so the next prompt takes that slot while the others keep decoding. Rows never
  wait for the slowest one. Compiled functions are cached: prefill per prompt bucket (shared by calls of other slot
  counts and cache lengths), decode per (slots, cache length, sampling mode), so after warm-up nothing is traced
  again (`traces` counts the model's traces). Generators of the same model config in one process share them.
  """

  def __init__(self, config: ModelConfig, params, eos_ids: Sequence[int], pad_id: int = 0, unroll: bool = True):
    """With `unroll` (the default), scanned params are unrolled into a per-layer copy: XLA:CPU copies a scanned
    layer's weights out of the stack on every decode step. unroll=False decodes the scanned layout in place."""
    if not eos_ids:
      raise UserError("at least one end-of-sequence id is needed")
    if config.scan_layers and unroll:
      params = unstack_layers(params, config.num_layers)
      config = config.replace(scan_layers=False)
    self.tied = config.tie_embeddings
    self.config = config.replace(remat="none", tie_embeddings=False)
    self.params = self._with_head(params)
    self.model = Transformer(self.config)
    self.eos_ids = np.asarray(sorted(set(int(i) for i in eos_ids)), np.int32)
    self.pad_id = int(pad_id)
    self.traces = 0  # how many times the model was traced (prefill per bucket, decode per shape)
    self.timing = Timing()  # of the last generate call
    self._fns: dict[tuple, object] = {}

  def _with_head(self, params) -> dict:
    """Device params, with a tied model's output projection as its own [D,V] copy: inside the decode loop XLA:CPU
    transposed the [V,D] embedding on every step (1.5 s a step for Gemma's 262k vocabulary, 0.1 s with the copy)."""
    params = jax.tree.map(jnp.asarray, params)
    return {**params, "lm_head": params["embedding"].T.copy()} if self.tied else params

  def set_params(self, params) -> None:
    """New values for the same params (e.g. after training steps); compiled functions are kept."""
    if "layers" in params and not self.config.scan_layers:
      params = unstack_layers(params, self.config.num_layers)
    self.params = self._with_head(params)

  def _compiled(self, key: tuple, fn, args: tuple, donate: tuple[int, ...]):
    if key not in self._fns:
      shared = (self.config, tuple(self.eos_ids.tolist()), self.pad_id, key, _signature(args))
      if shared not in _COMPILED:
        lowered = jax.jit(fn, donate_argnums=donate).lower(*args)
        options = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
        try:
          _COMPILED[shared] = lowered.compile(options)
        except Exception:  # an XLA without that option: its defaults
          _COMPILED[shared] = lowered.compile()
      self._fns[key] = _COMPILED[shared]
    return self._fns[key]

  def _sample(self, logits, ids, counts, key, temperature, top_p, *, greedy, top_k, use_top_p):
    """Next token per row from logits [B,V]; row i's draw depends only on (seed, its prompt id, its count)."""
    if greedy:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    keys = jax.vmap(lambda i, c: jax.random.fold_in(jax.random.fold_in(key, i), c))(ids, counts)
    one = functools.partial(sample_logits, temperature=temperature, top_p=top_p, greedy=False, top_k=top_k,
                            use_top_p=use_top_p)
    return jax.vmap(lambda l, k: one(l[None], k)[0])(logits, keys)

  def _prefill(self, params, tokens, positions, segments, prompt_id, key, temperature, top_p, *, mode):
    """One left-padded prompt [1,P]: its KV cache (per layer [1,K,P,H]) and its first token."""
    self.traces += 1
    p = tokens.shape[1]
    cache = init_cache(self.config, 1, p)
    logits, cache = self.model.apply({"params": params}, tokens, positions, segments, cache=cache, last_only=True)
    token = self._sample(logits[:, -1], prompt_id[None], jnp.zeros((1,), jnp.int32), key, temperature, top_p,
                         **mode)[0]
    return cache["k"], cache["v"], token

  def _insert(self, state, k, v, segments, slot, next_position, prompt_id, token):
    """A prefilled prompt's cache and first token into slot `slot` of the shared state (no model: compiles fast)."""
    p = segments.shape[1]
    big = state["cache"]
    row = jnp.zeros_like(big["segment_ids"][:1]).at[:, :p].set(segments)
    lead = (0,) if self.config.scan_layers else ()  # scanned caches are [L,B,K,S,H], unrolled ones L x [B,K,S,H]
    put = lambda big_kv, kv: jax.lax.dynamic_update_slice(big_kv, kv, lead + (slot, 0, 0, 0))  # noqa: E731
    big = {"k": jax.tree.map(put, big["k"], k), "v": jax.tree.map(put, big["v"], v),
           "segment_ids": jax.lax.dynamic_update_slice(big["segment_ids"], row, (slot, 0)),
           "index": big["index"].at[slot].set(p)}
    is_eos = jnp.isin(token, jnp.asarray(self.eos_ids))
    state = {"cache": big, "token": state["token"].at[slot].set(token),
             "position": state["position"].at[slot].set(next_position),
             "count": state["count"].at[slot].set(1), "id": state["id"].at[slot].set(prompt_id),
             "active": state["active"].at[slot].set(~is_eos & (state["max_new"] > 1)),
             "max_new": state["max_new"]}
    return state, is_eos

  def _decode(self, params, state, key, temperature, top_p, *, mode, chunk):
    """Up to `chunk` decode steps over every slot; returns early after the step in which an active row finished.
    Out: the state, tokens [chunk,B] and which of them were emitted (active, not an end-of-sequence id)."""
    self.traces += 1
    b = state["token"].shape[0]
    eos = jnp.asarray(self.eos_ids)

    def cond(carry):
      step, st, _, _, finished = carry
      return (step < chunk) & ~finished & jnp.any(st["active"])

    def body(carry):
      step, st, out, emitted, _ = carry
      logits, cache = self.model.apply({"params": params}, st["token"][:, None], st["position"][:, None],
                                       jnp.ones((b, 1), jnp.int32), cache=st["cache"])
      nxt = self._sample(logits[:, -1], st["id"], st["count"], key, temperature, top_p, **mode)
      active = st["active"]
      is_eos = jnp.isin(nxt, eos)
      count = st["count"] + active
      still = active & ~is_eos & (count < st["max_new"])
      out = out.at[step].set(nxt)
      emitted = emitted.at[step].set(active & ~is_eos)
      cache["index"] = jnp.where(active, cache["index"], st["cache"]["index"])  # idle slots stay put
      st = {**st, "cache": cache, "token": jnp.where(active, nxt, st["token"]),
            "position": st["position"] + active, "count": count, "active": still}
      return step + 1, st, out, emitted, jnp.any(active & ~still)

    out = jnp.full((chunk, b), self.pad_id, jnp.int32)
    carry = (jnp.int32(0), state, out, jnp.zeros((chunk, b), bool), jnp.bool_(False))
    _, state, out, emitted, _ = jax.lax.while_loop(cond, body, carry)
    return state, out, emitted

  def _empty_state(self, slots: int, length: int, max_new: int) -> dict:
    cache = init_cache(self.config, slots, length)
    cache["index"] = jnp.zeros((slots,), jnp.int32)
    zeros = lambda: jnp.zeros((slots,), jnp.int32)  # noqa: E731  (distinct buffers: the state is donated)
    return {"cache": cache, "token": zeros(), "position": zeros(), "count": zeros(), "id": zeros(),
            "active": jnp.zeros((slots,), bool), "max_new": jnp.int32(max_new)}

  def _check_request(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> int:
    """The longest prompt's length, after checking that every prompt has a token and fits with its answer."""
    if any(len(p) == 0 for p in prompts):
      raise UserError("empty prompt: every prompt needs at least one token")
    if max_new_tokens < 1:
      raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > self.config.max_position_embeddings:
      raise UserError(f"prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the model's "
                      f"max_position_embeddings={self.config.max_position_embeddings}")
    return longest

  def _prompt_row(self, prompt: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One prompt left-padded to its bucket: tokens, positions (0 on padding) and segments (0 on padding), [1, W]."""
    n = len(prompt)
    width = bucket_length(n)
    row = np.full((1, width), self.pad_id, np.int32)
    row[0, width - n:] = np.asarray(prompt, np.int32)
    positions = np.zeros((1, width), np.int32)
    positions[0, width - n:] = np.arange(n)
    segments = (np.arange(width) >= width - n).astype(np.int32)[None]
    return row, positions, segments

  def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling = Sampling(),
               seed: int = 0, batch_size: int | None = None, chunk: int = 16, on_done=None) -> list[Generated]:
    """Generates for every prompt, `batch_size` slots at a time (default: one slot per prompt); results come back
    in input order and do not depend on the slot count or on which prompts share the batch. `on_done(i, result)`
    is called as each prompt finishes."""
    if not prompts:
      return []
    longest = self._check_request(prompts, max_new_tokens)
    slots = min(batch_size or len(prompts), len(prompts))
    mode = dict(greedy=sampling.greedy, top_k=sampling.top_k, use_top_p=sampling.top_p < 1)
    scalars = (jax.random.key(seed), jnp.float32(max(sampling.temperature, 1e-6)), jnp.float32(sampling.top_p))
    length = bucket_length(longest) + max_new_tokens
    state = self._empty_state(slots, length, max_new_tokens)
    mode_key = tuple(sorted(mode.items()))
    decode_args = (self.params, state) + scalars
    decode = self._compiled(("decode", slots, length, chunk, mode_key),
                            functools.partial(self._decode, mode=mode, chunk=chunk), decode_args, (1,))
    timing = self.timing = Timing()
    results: list[Generated | None] = [None] * len(prompts)
    tokens: dict[int, list[int]] = {}
    owner = [-1] * slots  # the prompt in each slot
    queue = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))

    def finish(i: int, done_by_eos: bool) -> None:
      results[i] = Generated(tokens.pop(i), done_by_eos)
      if on_done is not None:
        on_done(i, results[i])

    def fill(slot: int, state):
      while queue:
        i = queue.pop(0)
        n = len(prompts[i])
        row, positions, segments = self._prompt_row(prompts[i])
        width = row.shape[1]
        args = (self.params, row, positions, segments, np.int32(i)) + scalars
        prefill = self._compiled(("prefill", width, mode_key), functools.partial(self._prefill, mode=mode), args, ())
        t = time.perf_counter()
        k, v, token = prefill(*args)
        args = (state, k, v, segments, np.int32(slot), np.int32(n), np.int32(i), token)
        insert = self._compiled(("insert", slots, length, width), self._insert, args, (0,))
        state, is_eos = insert(*args)
        token, is_eos = int(token), bool(is_eos)
        elapsed = time.perf_counter() - t
        timing.prefill_s += elapsed
        timing.first_token_s.append(elapsed)
        tokens[i] = [] if is_eos else [token]
        if is_eos or max_new_tokens == 1:
          finish(i, is_eos)
          continue
        owner[slot] = i
        return state
      owner[slot] = -1
      return state

    for slot in range(slots):
      state = fill(slot, state)
    while any(i >= 0 for i in owner):
      t = time.perf_counter()
      state, out, emitted = decode(self.params, state, *scalars)
      out, emitted = np.asarray(out), np.asarray(emitted)
      active, count = np.asarray(state["active"]), np.asarray(state["count"])
      timing.decode_s += time.perf_counter() - t
      timing.decode_tokens += int(emitted.sum())
      for slot, i in enumerate(owner):
        if i < 0:
          continue
        tokens[i].extend(out[emitted[:, slot], slot].tolist())
        if not active[slot]:
          finish(i, bool(len(tokens[i]) < count[slot]))  # the last sampled token was an end-of-sequence id
          state = fill(slot, state)
    return results


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
  """Cuts text at the earliest occurrence of any stop string."""
  cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
  return text[:cut]


def generate_with_progress(generator: Generator, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                           sampling: Sampling = Sampling(), batch_size: int = 8, seed: int = 0,
                           progress: bool = True, desc: str = "generate") -> list[Generated]:
  """`generator.generate` with a progress bar: prompts done, prompts/s, generated tokens/s and the ETA."""
  from tqdm import tqdm
  bar = tqdm(total=len(prompts), unit="prompt", disable=not progress, dynamic_ncols=True, desc=desc, leave=False)
  generated = 0

  def done(i: int, out: Generated) -> None:
    nonlocal generated
    generated += len(out.tokens)
    bar.update(1)
    bar.set_postfix_str(f"{generated / (bar.format_dict['elapsed'] or 1e-9):.1f} tok/s")

  try:
    return generator.generate(prompts, max_new_tokens, sampling, seed=seed, batch_size=batch_size, on_done=done)
  finally:
    bar.close()


def generate_texts(generator: Generator, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   sampling: Sampling = Sampling(), batch_size: int = 8, seed: int = 0, stop: Sequence[str] = (),
                   progress: bool = True) -> list[str]:
  """Decoded responses for many prompts, in input order, over `batch_size` refilling slots (with a progress bar)."""
  outs = generate_with_progress(generator, prompts, max_new_tokens, sampling, batch_size, seed, progress)
  return [truncate_at_stop(tokenizer.decode(o.tokens), stop) for o in outs]
