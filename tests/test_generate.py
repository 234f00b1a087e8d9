"""Generation: batched == one at a time, compiled once per shape bucket, sampling filters, stop strings, KV cache."""

import jax
import numpy as np
import pytest

from itjax.model.generate import Generator, Sampling, bucket_length, sample_logits, truncate_at_stop
from itjax.model.config import PRESETS
from itjax.model.llama import Transformer, init_cache, init_params, unstack_layers
from conftest import forward

CONFIG = PRESETS["tiny"]
EOS = 3


@pytest.fixture(scope="module")
def params():
  return init_params(CONFIG, jax.random.key(0))


def prompts_of(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(4, CONFIG.vocab_size, size=n).tolist() for n in lengths]


@pytest.mark.slow
def test_cache_decoding_matches_full_forward(params):
  """Prefill + token-by-token decode through the cache gives the logits of one full forward pass."""
  tokens = np.asarray(prompts_of([20])[0])[None]
  full = forward(CONFIG, params, tokens)
  for cfg, p in ((CONFIG, params), (CONFIG.replace(scan_layers=False), unstack_layers(params, CONFIG.num_layers))):
    apply = jax.jit(Transformer(cfg).apply)  # one program per shape; op by op, every op would compile alone
    cache = init_cache(cfg, 1, 32)
    logits, cache = apply({"params": p}, tokens[:, :12], cache=cache)
    steps = [np.asarray(logits)]
    for t in range(12, 20):
      logits, cache = apply({"params": p}, tokens[:, t:t + 1], np.array([[t]]), cache=cache)
      steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)


def test_batched_generation_equals_one_at_a_time(params):
  prompts = prompts_of([3, 7, 12, 20, 1])
  gen = Generator(CONFIG, params, eos_ids=[EOS])
  together = gen.generate(prompts, max_new_tokens=12, batch_size=8)
  for prompt, out in zip(prompts, together):
    alone = gen.generate([prompt], max_new_tokens=12)[0]
    assert out.tokens == alone.tokens
    assert out.finished == alone.finished
  assert any(len(o.tokens) > 5 for o in together)


def test_left_padded_prefill_matches_unpadded(params):
  """A left-padded row's next-token logits equal those of the same prompt without padding."""
  prompt = prompts_of([9])[0]
  alone = forward(CONFIG, params, np.array([prompt]))[0, -1]
  width = 16
  tokens = np.zeros((1, width), np.int32)
  tokens[0, -9:] = prompt
  positions = np.maximum(np.arange(width) - (width - 9), 0)[None]
  segments = (np.arange(width) >= width - 9).astype(np.int32)[None]
  padded = forward(CONFIG, params, tokens, positions, segments)[0, -1]
  np.testing.assert_allclose(padded, alone, atol=1e-5, rtol=0)


def test_compiled_once_per_shape_bucket(params, monkeypatch):
  """Prefill compiles once per prompt bucket, whatever the call's slots and cache length, and decode once per
  (slots, cache length): after warm-up nothing is traced again, however many prompts pass through the slots, nor
  by another generator of the same model."""
  from itjax.model import generate
  monkeypatch.setattr(generate, "_COMPILED", {})  # as in a fresh process
  gen = Generator(CONFIG, params, eos_ids=[EOS])
  gen.generate(prompts_of([3, 9, 40]), max_new_tokens=4, batch_size=2)  # buckets 16 and 64, cache 64 + 4
  warm = gen.traces
  assert warm == 3  # decode + prefill(16) + prefill(64)
  gen.generate(prompts_of([5, 16, 12, 33, 7, 2, 64, 1, 11], seed=1), max_new_tokens=4, batch_size=2)
  assert gen.traces == warm
  gen.generate(prompts_of([17, 20]), max_new_tokens=4, batch_size=2)  # a new cache length (32 + 4)
  assert gen.traces == warm + 2
  gen.generate(prompts_of([3, 9, 5]), max_new_tokens=4, batch_size=3)  # 3 slots, cache 16 + 4: bucket 16 is known
  assert gen.traces == warm + 3
  other = Generator(CONFIG, jax.tree.map(lambda x: x + 1, params), eos_ids=[EOS])  # other values, same model
  assert [o.tokens for o in other.generate(prompts_of([3, 9, 5]), max_new_tokens=4, batch_size=3)] != [
      o.tokens for o in gen.generate(prompts_of([3, 9, 5]), max_new_tokens=4, batch_size=3)]
  assert other.traces == 0
  assert [bucket_length(n) for n in (1, 16, 17, 33, 64, 65, 96, 97, 157)] == [16, 16, 32, 64, 64, 96, 96, 128, 160]


@pytest.mark.slow
def test_slot_refill_changes_nothing(params):
  """Ten prompts through 1, 3 or 16 refilling slots give the tokens each prompt gets alone, with EOS ids that end
  rows at different steps (so slots are refilled mid-decode)."""
  prompts = prompts_of([3, 7, 12, 20, 1, 30, 5, 9, 14, 2])
  gen = Generator(CONFIG, params, eos_ids=list(range(4, 60)))
  alone = [gen.generate([p], 12)[0] for p in prompts]
  assert len({len(a.tokens) for a in alone}) > 3 and any(a.finished for a in alone)
  for slots in (1, 3, 16):
    got = gen.generate(prompts, 12, batch_size=slots, chunk=4)
    assert [g.tokens for g in got] == [a.tokens for a in alone], slots
    assert [g.finished for g in got] == [a.finished for a in alone], slots


def test_sampling_does_not_depend_on_the_slots(params):
  gen = Generator(CONFIG, params, eos_ids=[EOS])
  s = Sampling(temperature=1.0, top_k=50, top_p=0.9)
  prompts = prompts_of([3, 7, 12, 20, 1, 30])
  a = gen.generate(prompts, 10, s, seed=1, batch_size=2)
  b = gen.generate(prompts, 10, s, seed=1, batch_size=5)
  assert [x.tokens for x in a] == [x.tokens for x in b]


def test_eos_stops_a_row(params):
  gen = Generator(CONFIG, params, eos_ids=[EOS])
  free = gen.generate(prompts_of([6]), max_new_tokens=8)[0]
  # Make the 3rd generated token the end-of-sequence id: generation must stop right before it.
  stopper = Generator(CONFIG, params, eos_ids=[free.tokens[2]])
  out = stopper.generate(prompts_of([6]), max_new_tokens=8)[0]
  first = free.tokens.index(free.tokens[2])
  assert out.tokens == free.tokens[:first] and out.finished is True and free.finished is False


def test_sampling_filters():
  logits = jax.numpy.asarray(np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32)))
  kw = dict(temperature=1.0, top_p=1.0)
  keys = jax.random.split(jax.random.key(0), 200)
  draw = lambda **k: {int(sample_logits(logits, r, **{**kw, **k})[0]) for r in keys}  # noqa: E731
  assert draw(greedy=True, top_k=0, use_top_p=False) == {0}
  assert draw(greedy=False, top_k=2, use_top_p=False) == {0, 1}
  assert draw(greedy=False, top_k=0, use_top_p=True, top_p=0.7) == {0, 1}  # 0.5 < 0.7 <= 0.8
  assert draw(greedy=False, top_k=0, use_top_p=True, top_p=0.01) == {0}
  assert draw(greedy=False, top_k=0, use_top_p=False) == {0, 1, 2, 3}


def test_seeded_sampling_is_reproducible(params):
  gen = Generator(CONFIG, params, eos_ids=[EOS])
  prompts = prompts_of([5, 8])
  s = Sampling(temperature=1.0, top_k=50, top_p=0.9)
  a = gen.generate(prompts, 10, s, seed=1)
  b = gen.generate(prompts, 10, s, seed=1)
  c = gen.generate(prompts, 10, s, seed=2)
  assert [o.tokens for o in a] == [o.tokens for o in b]
  assert [o.tokens for o in a] != [o.tokens for o in c]


def test_bad_sampling_and_prompts(params):
  with pytest.raises(ValueError, match="top_p"):
    Sampling(top_p=0.0)
  with pytest.raises(ValueError, match="temperature"):
    Sampling(temperature=-1)
  gen = Generator(CONFIG, params, eos_ids=[EOS])
  with pytest.raises(ValueError, match="empty prompt"):
    gen.generate([[]], 4)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    gen.generate([[5] * 10], CONFIG.max_position_embeddings)


def test_truncate_at_stop():
  assert truncate_at_stop("one. two. three", ["two", "."]) == "one"
  assert truncate_at_stop("no stop here", ["###"]) == "no stop here"
