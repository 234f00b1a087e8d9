"""SmolLM2-135M-Instruct from its GGUF: logits and tokenizer against transformers loading the same file."""

import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import forward  # noqa: E402

pytestmark = pytest.mark.slow

CONVERSATION = [
    {"role": "system", "content": "You are a concise assistant who answers in full sentences."},
    {"role": "user", "content": "Name three primary colours and say which one is usually associated with the sky."},
    {"role": "assistant", "content": "Red, yellow and blue are primary colours; the sky is usually called blue."},
    {"role": "user", "content": "Now list them in reverse alphabetical order, please."},
]


@pytest.fixture(scope="module")
def hf_smollm2(hf_smollm2_model, hf_smollm2_tokenizer):
  return hf_smollm2_model, hf_smollm2_tokenizer


def test_gguf_logits_match_transformers(hf_smollm2, itjax_smollm2):
  hf_model, hf_tok = hf_smollm2
  ids = itjax_smollm2.tokenizer.encode_chat(CONVERSATION)
  assert len(ids) >= 64
  with torch.no_grad():
    want = hf_model(torch.tensor([ids])).logits.numpy()
  got = forward(itjax_smollm2.config, itjax_smollm2.params, np.array([ids]))
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


# Chosen before the first run; not tuned to pass.
GREEDY_PROMPTS = [
    "What is the capital of Japan?",
    "Write one sentence about the moon.",
    "List the first five prime numbers.",
    "How do I boil an egg?",
    "Translate 'thank you' into German.",
    "What is the opposite of 'ancient'?",
    "Give me a name for a pet goldfish.",
    "Summarise the plot of Cinderella in one sentence.",
]


def test_greedy_generation_matches_transformers(hf_smollm2, itjax_smollm2):
  from itjax.model.generate import Generator
  hf_model, _ = hf_smollm2
  tok = itjax_smollm2.tokenizer
  prompts = [tok.encode_chat([{"role": "user", "content": p}]) for p in GREEDY_PROMPTS]
  gen = Generator(itjax_smollm2.config, itjax_smollm2.params, tok.eos_ids, tok.pad_id)
  ours = gen.generate(prompts, max_new_tokens=32, batch_size=8)
  width = max(map(len, prompts))  # transformers generates the 8 at once, left-padded with an attention mask
  ids = torch.tensor([[tok.pad_id] * (width - len(p)) + p for p in prompts])
  mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
  with torch.no_grad():
    refs = hf_model.generate(ids, attention_mask=mask, max_new_tokens=32, do_sample=False,
                             eos_token_id=list(tok.eos_ids), pad_token_id=tok.pad_id)[:, width:].tolist()
  near_ties = 0
  for prompt, out, ref in zip(prompts, ours, refs):
    ref = ref[:next((i for i, t in enumerate(ref) if t in tok.eos_ids), len(ref))]
    if out.tokens == ref:
      continue
    # A divergence is accepted only at a near-tie of the reference's top-2 logits.
    step = next(i for i, (a, b) in enumerate(zip(out.tokens + [-1], ref + [-1])) if a != b)
    with torch.no_grad():
      logits = hf_model(torch.tensor([prompt + ref[:step]])).logits[0, -1]
    top2 = torch.topk(logits, 2).values
    gap = float(top2[0] - top2[1])
    assert gap < 1e-3, f"diverged at step {step} for {tok.decode(prompt)!r} with top-2 gap {gap}"
    near_ties += 1
  assert near_ties <= 2


@pytest.mark.slow
def test_a_gguf_loads_again_from_its_kept_conversion(smollm2_gguf, tmp_path, monkeypatch):
  """The first load of a GGUF keeps its conversion (itjax.interop.gguf_cache); the next load reads it: the same
  config, the same params bit for bit, a tokenizer that encodes a chat and stops alike. A kept folder that does not
  read is ignored, and ITJAX_GGUF_CACHE=0 keeps nothing."""
  from itjax.interop import gguf_cache
  from itjax.interop.gguf import load_gguf
  from itjax.model import lora as lora_lib
  monkeypatch.setenv("ITJAX_CACHE", str(tmp_path))
  where = gguf_cache.folder(smollm2_gguf)
  converted = load_gguf(smollm2_gguf)
  assert os.path.isdir(where) and not [n for n in os.listdir(os.path.dirname(where)) if n.startswith(".partial")]
  kept = gguf_cache.read(where, "float32", "float32")
  assert kept is not None and kept[0] == converted[0]
  a, b = lora_lib.flatten(converted[1]), lora_lib.flatten(kept[1])
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
  chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name two rivers, é ü."}]
  for attr in ("bos_id", "eos_ids", "pad_id", "add_bos", "chat_template", "special_tokens", "vocab_size"):
    assert getattr(kept[2], attr) == getattr(converted[2], attr), attr
  assert kept[2].encode_chat(chat, add_generation_prompt=True) == converted[2].encode_chat(
      chat, add_generation_prompt=True)
  assert load_gguf(smollm2_gguf, param_dtype="bfloat16")[1]["embedding"].dtype == "bfloat16"
  broken = tmp_path / "broken"
  shutil.copytree(where, broken)
  (broken / "params.safetensors").write_bytes(b"not safetensors")
  assert gguf_cache.read(str(broken), "float32", "float32") is None
  monkeypatch.setenv("ITJAX_GGUF_CACHE", "0")
  assert gguf_cache.folder(smollm2_gguf) is None
