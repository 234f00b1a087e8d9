"""Packing: best-fit decreasing rows, and a packed example's logits equal its logits alone."""

import jax
import numpy as np
import pytest

from conftest import forward, make_llama3_style_tokenizer
from itjax.data import encode, packing
from itjax.data.pipeline import Pipeline, Source
from itjax.model.config import PRESETS
from itjax.model.llama import init_params
from itjax.data.tokenizer import HFTokenizer


def test_best_fit_decreasing_places_every_example_once_within_capacity():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 300, size=500)
  rows = packing.best_fit_decreasing(lengths, 512)
  assert sorted(i for row in rows for i in row) == list(range(500))
  assert all(sum(lengths[i] for i in row) <= 512 for row in rows)
  lower_bound = -(-lengths.sum() // 512)
  assert len(rows) <= lower_bound * 11 / 9 + 1  # within the FFD/BFD worst-case bound of the optimum
  assert packing.best_fit_decreasing([3, 3, 2, 2, 2, 2], 6) == [[0, 1], [2, 3, 4], [5]]
  assert packing.best_fit_decreasing([4, 2, 3, 3], 6) == [[0, 1], [2, 3]]  # first-fit in order would need 3


@pytest.mark.slow
def test_packed_example_logits_equal_its_logits_alone():
  tok = HFTokenizer(make_llama3_style_tokenizer())
  config = PRESETS["tiny"].replace(vocab_size=len(tok.tok))
  chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in [
      ("What is the capital of France?", "Paris."), ("List three colours.", "Red, green and blue."),
      ("Hello", "Hello! How can I help?"), ("Numbers?", "1 2 3 4 5 6 7 8 9 10.")]]
  examples = [encode.encode_chat(tok, c) for c in chats]
  assert len({len(ids) for ids, _ in examples}) == 4  # each example is found in the row by its length
  max_len = sum(len(ids) - 1 for ids, _ in examples) + 3
  pipe = Pipeline([Source("chats", examples)], max_len, batch_size=1, pad_id=tok.pad_id, process_index=0,
                  process_count=1)
  batch = next(pipe)
  assert batch["segment_ids"].max() == 4  # all four in one row, then padding
  assert pipe.efficiency() == (max_len - 3) / max_len
  params = init_params(config, jax.random.key(0))
  packed = forward(config, params, batch["inputs"], batch["positions"], batch["segment_ids"])[0]
  for s in range(1, 5):
    slots = np.flatnonzero(batch["segment_ids"][0] == s)
    ids, mask = examples[[len(ids) - 1 for ids, _ in examples].index(len(slots))]
    assert batch["positions"][0, slots].tolist() == list(range(len(slots)))
    assert batch["inputs"][0, slots].tolist() == ids[:-1].tolist()
    assert batch["targets"][0, slots].tolist() == ids[1:].tolist()
    assert batch["weights"][0, slots].tolist() == mask[1:].tolist()
    alone = forward(config, params, ids[None, :-1])[0]
    np.testing.assert_allclose(packed[slots], alone, atol=1e-5, rtol=0)
  pad = batch["segment_ids"][0] == 0
  assert pad.sum() == 3 and not batch["weights"][0, pad].any()
