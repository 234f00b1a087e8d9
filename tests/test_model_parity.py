"""Logits parity with transformers (torch, fp32, CPU) on tiny random models built from configs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from itjax.interop.hf import load_hf_model  # noqa: E402
from conftest import forward  # noqa: E402

BASE = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=256, rms_norm_eps=1e-5)

CASES = {
    "llama-mha-untied": ("llama", dict(num_key_value_heads=4, tie_word_embeddings=False)),
    "llama-gqa-tied": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "llama-mqa": ("llama", dict(num_key_value_heads=1, tie_word_embeddings=False)),
    "llama3-rope-scaling": ("llama", dict(
        num_key_value_heads=2, rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                                    low_freq_factor=1.0, high_freq_factor=4.0,
                                                    original_max_position_embeddings=16))),
    "llama-linear-rope-bias-headdim": ("llama", dict(
        num_key_value_heads=2, head_dim=24, attention_bias=True, mlp_bias=True,
        rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0))),
    "mistral-sliding-window": ("mistral", dict(num_key_value_heads=2, sliding_window=5, head_dim=16)),
    "qwen2-biases": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3-qk-norm": ("qwen3", dict(num_key_value_heads=2, head_dim=24, tie_word_embeddings=True)),
    "gemma2-softcaps-alternating": ("gemma2", dict(
        num_hidden_layers=4, num_key_value_heads=2, head_dim=16, sliding_window=5, query_pre_attn_scalar=24,
        attn_logit_softcapping=2.0, final_logit_softcapping=3.0)),
    "gemma3-local-global": ("gemma3_text", dict(
        num_hidden_layers=4, num_key_value_heads=1, head_dim=32, sliding_window=5, query_pre_attn_scalar=20,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 8.0}})),
}


def make_hf_model(model_type, overrides, path, seed=0, max_shard_size=None):
  torch.manual_seed(seed)
  config = transformers.AutoConfig.for_model(model_type, **{**BASE, **overrides})
  config._attn_implementation = "eager"
  model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
  with torch.no_grad():  # random non-trivial norms and biases, so a mixed-up tensor cannot hide
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or name.endswith("bias"):
        p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
  model.save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
  return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, tmp_path):
  model_type, overrides = CASES[case]
  hf = make_hf_model(model_type, overrides, tmp_path)
  config, params = load_hf_model(str(tmp_path))
  tokens = np.random.default_rng(1).integers(0, BASE["vocab_size"], size=(2, 24))
  with torch.no_grad():
    want = hf(torch.tensor(tokens)).logits.numpy()
  got = forward(config, params, tokens)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_sharded_safetensors_with_index(tmp_path):
  hf = make_hf_model("llama", dict(num_key_value_heads=2), tmp_path, max_shard_size="100KB")
  assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
  config, params = load_hf_model(str(tmp_path))
  tokens = np.arange(16)[None]
  with torch.no_grad():
    want = hf(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(forward(config, params, tokens), want, atol=1e-4)


def test_bfloat16_compute_tracks_float32(tmp_path):
  make_hf_model("llama", dict(num_key_value_heads=2), tmp_path)
  config, params = load_hf_model(str(tmp_path))
  tokens = np.random.default_rng(0).integers(0, BASE["vocab_size"], size=(2, 16))
  f32 = forward(config, params, tokens)
  bf16 = forward(config.replace(dtype="bfloat16"), params, tokens)
  assert bf16.dtype == np.float32  # logits stay float32
  assert np.abs(np.asarray(bf16) - f32).max() < 0.1 * np.abs(f32).max()
  assert (np.asarray(bf16).argmax(-1) == f32.argmax(-1)).mean() > 0.9


@pytest.mark.parametrize("case", ["qwen3-qk-norm", "gemma2-softcaps-alternating", "gemma3-local-global"])
def test_cached_decoding_and_packed_rows_match_transformers(case, tmp_path):
  """The families with q/k norms, soft-capping and local/global layers: a prompt prefilled into the KV cache and 15
  tokens decoded one by one (past the sliding window of 5), and two sequences packed into one row (positions
  restarting, segment ids apart), each give transformers' logits of the sequence alone."""
  import jax
  import jax.numpy as jnp
  from itjax.model.llama import Transformer, init_cache, unstack_layers
  hf = make_hf_model(*CASES[case], tmp_path)
  config, scanned = load_hf_model(str(tmp_path))
  config = config.replace(scan_layers=False)  # the decoding layout
  params = unstack_layers(scanned, config.num_layers)
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, BASE["vocab_size"], size=(1, 24))
  with torch.no_grad():
    want = hf(torch.tensor(tokens)).logits.numpy()[0]
  model = Transformer(config)
  step = jax.jit(lambda p, x, pos, cache: model.apply({"params": p}, x, pos, None, cache=cache))
  cache = init_cache(config, 1, 32)
  logits, cache = step(params, jnp.asarray(tokens[:, :9]), jnp.arange(9)[None], cache)
  got = [np.asarray(logits[0])]
  for i in range(9, 24):
    logits, cache = step(params, jnp.asarray(tokens[:, i:i + 1]), jnp.asarray([[i]]), cache)
    got.append(np.asarray(logits[0]))
  np.testing.assert_allclose(np.concatenate(got), want, atol=1e-4, rtol=0)

  other = rng.integers(0, BASE["vocab_size"], size=(1, 13))
  with torch.no_grad():
    want_other = hf(torch.tensor(other)).logits.numpy()[0]
  row = np.concatenate([tokens[:, :11], other], axis=1)
  positions = np.concatenate([np.arange(11), np.arange(13)])[None]
  segments = np.concatenate([np.ones(11, int), np.full(13, 2)])[None]
  packed = forward(config.replace(scan_layers=True), scanned, row, positions, segments)[0]
  np.testing.assert_allclose(packed[:11], want[:11], atol=1e-4, rtol=0)
  np.testing.assert_allclose(packed[11:], want_other, atol=1e-4, rtol=0)
