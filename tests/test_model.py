"""Model structure: logical axis names on every param, segment-aware masking, config mapping errors."""

import jax
import numpy as np
import pytest

from itjax.model.config import PRESETS, from_hf_config
from itjax.model.llama import attention_mask, init_params, param_axes
from conftest import forward

CONFIG = PRESETS["tiny"].replace(qkv_bias=True, out_bias=True, mlp_bias=True)


def test_every_param_has_logical_axes():
  params = init_params(CONFIG, jax.random.key(0))
  axes = param_axes(CONFIG)
  flat_params = jax.tree_util.tree_leaves_with_path(params)
  flat_axes = dict(jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))
  assert len(flat_params) == len(flat_axes)
  for path, leaf in flat_params:
    spec = flat_axes[path]
    assert len(spec) == leaf.ndim and all(isinstance(a, str) for a in spec), (path, spec)
    if path[0].key == "layers":
      assert spec[0] == "layers"
  assert sum(x.size for x in jax.tree.leaves(params)) == CONFIG.num_params


def test_packed_segments_do_not_attend_to_each_other():
  """Logits of a sequence inside a packed row equal its logits alone (positions restart per segment)."""
  params = init_params(PRESETS["tiny"], jax.random.key(1))
  rng = np.random.default_rng(0)
  seqs = [rng.integers(0, 256, size=n) for n in (5, 9, 4)]
  tokens = np.concatenate(seqs + [np.zeros(2, int)])[None]
  segments = np.concatenate([np.full(len(s), i + 1) for i, s in enumerate(seqs)] + [np.zeros(2, int)])[None]
  positions = np.concatenate([np.arange(len(s)) for s in seqs] + [np.zeros(2, int)])[None]
  packed = forward(PRESETS["tiny"], params, tokens, positions, segments)[0]
  start = 0
  for s in seqs:
    alone = forward(PRESETS["tiny"], params, s[None])[0]
    np.testing.assert_allclose(packed[start:start + len(s)], alone, atol=1e-5, rtol=0)
    start += len(s)


def test_attention_mask_rules():
  seg = np.array([[1, 1, 2, 2, 0]])
  m = np.asarray(attention_mask(seg, seg, 0, None))[0]
  assert m[1, 0] and not m[0, 1]  # causal
  assert not m[2, 1] and m[3, 2]  # segments apart
  assert not m[4].any()  # padding sees nothing
  w = np.asarray(attention_mask(np.ones((1, 6)), np.ones((1, 6)), 0, 2))[0]
  assert w[5, 4] and w[5, 5] and not w[5, 3]  # sliding window of 2 slots


def test_hf_config_errors():
  with pytest.raises(ValueError, match="missing required key 'hidden_size'"):
    from_hf_config({"model_type": "llama", "vocab_size": 10})
  with pytest.raises(ValueError, match="rope type 'yarn' is not supported"):
    from_hf_config({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                    "num_hidden_layers": 1, "num_attention_heads": 2, "rope_scaling": {"rope_type": "yarn"}})
  with pytest.raises(ValueError, match="not a multiple of num_kv_heads"):
    PRESETS["tiny"].replace(num_kv_heads=3)
