"""SmolLM2-135M-Instruct from its GGUF: logits and tokenizer against transformers loading the same file."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from itjax.loading import load_model  # noqa: E402
from itjax.model.llama import Transformer  # noqa: E402

pytestmark = pytest.mark.slow

CONVERSATION = [
    {"role": "system", "content": "You are a concise assistant who answers in full sentences."},
    {"role": "user", "content": "Name three primary colours and say which one is usually associated with the sky."},
    {"role": "assistant", "content": "Red, yellow and blue are primary colours; the sky is usually called blue."},
    {"role": "user", "content": "Now list them in reverse alphabetical order, please."},
]


@pytest.fixture(scope="module")
def hf_smollm2(smollm2_gguf):
  directory, name = os.path.split(smollm2_gguf)
  model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
  tok = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
  return model, tok


@pytest.fixture(scope="module")
def itjax_smollm2(smollm2_gguf):
  return load_model(smollm2_gguf)


def test_gguf_logits_match_transformers(hf_smollm2, itjax_smollm2):
  hf_model, hf_tok = hf_smollm2
  ids = itjax_smollm2.tokenizer.encode_chat(CONVERSATION)
  assert len(ids) >= 64
  with torch.no_grad():
    want = hf_model(torch.tensor([ids])).logits.numpy()
  got = np.asarray(Transformer(itjax_smollm2.config).apply({"params": itjax_smollm2.params}, np.array([ids])))
  np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_gguf_tokenizer_matches_transformers(hf_smollm2, itjax_smollm2):
  _, hf_tok = hf_smollm2
  tok = itjax_smollm2.tokenizer
  for text in ["Hello world!", "  leading spaces and\ttabs\n\nnew lines", "Ünïcödé — 数学 123.45e-6",
               "<|im_start|>user\nspecial tokens inline<|im_end|>"]:
    assert tok.encode(text) == hf_tok(text).input_ids, text
    assert tok.decode(tok.encode(text), skip_special_tokens=False) == hf_tok.decode(hf_tok(text).input_ids)
  assert tok.chat_template == hf_tok.chat_template
  assert tok.eos_ids == (hf_tok.eos_token_id,)
