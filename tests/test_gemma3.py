"""The real Gemma 3 270M (the built-in gemma3-270m: the base model's Q4_K_M GGUF) against transformers reading the
same file: logits, and greedy generation of plain-text prompts."""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a 240 MB download on a fresh machine; transformers reads the file in about a minute

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = ["The capital of France is", "Once upon a time, in a small village,", "def fibonacci(n):",
           "The three primary colours are", "Water boils at a temperature of", "A haiku about the sea:\n",
           "In 1969, the first person to walk on the Moon", "The best way to learn a language is"]


@pytest.fixture(scope="module")
def gemma3():
  """(itjax's model, transformers' model) of the same GGUF file."""
  from itjax.interop.loading import load_model
  from itjax.io import demo_model
  path = demo_model.fetch(name="gemma3-270m")
  ours = load_model("gemma3-270m")
  assert ours.source == path and ours.config.model_type == "gemma3_text"
  directory, name = os.path.split(path)
  theirs = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
  return ours, theirs


def test_gemma3_logits_match_transformers_past_the_sliding_window(gemma3):
  """A short prompt, and 700 tokens (the local layers' window is 512): the same logits as transformers, within
  1e-4 and 1e-3 (float32 sums over 700 positions), the same argmax everywhere."""
  from conftest import forward
  ours, theirs = gemma3
  assert ours.config.layer_types.count("full_attention") == 3 and ours.config.sliding_window == 512
  short = np.asarray([ours.tokenizer.encode(PROMPTS[0])])
  long = np.asarray([ours.tokenizer.encode(" ".join(PROMPTS * 40))[:700]])
  for tokens, atol in ((short, 1e-4), (long, 1e-3)):
    with torch.no_grad():
      want = theirs(torch.tensor(tokens)).logits.numpy()
    got = forward(ours.config, ours.params, tokens)
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_gemma3_greedy_generation_matches_transformers(gemma3):
  """Eight plain-text prompts (after BOS, no chat template: a base model), 64 new tokens each, through itjax's
  continuous batching and transformers' batched generate (left-padded): token for token the same."""
  from itjax.model.generate import Generator
  ours, theirs = gemma3
  tok = ours.tokenizer
  ids = [tok.encode(p) for p in PROMPTS]
  assert all(i[0] == tok.bos_id for i in ids)
  width = max(map(len, ids))
  padded = torch.tensor([[tok.pad_id] * (width - len(i)) + i for i in ids])
  mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
  with torch.no_grad():
    ref = theirs.generate(padded, attention_mask=mask, max_new_tokens=64, do_sample=False, pad_token_id=tok.pad_id)
  got = Generator(ours.config, ours.params, tok.eos_ids, tok.pad_id).generate(ids, 64, batch_size=8)
  for row, out in zip(ref[:, width:].tolist(), got):
    ends = [k for k, t in enumerate(row) if t in tok.eos_ids]
    assert out.tokens == (row[:ends[0]] if ends else row)
  assert sum(len(out.tokens) for out in got) > 200  # most prompts run on: the comparison covers long answers


@pytest.fixture(scope="module")
def gemma3_tokenizer():
  from itjax.interop.loading import load_tokenizer
  return load_tokenizer("gemma3-270m")


def test_the_gemma_template_tokenizes_as_transformers_renders_it_and_trains_the_assistant_turns(gemma3_tokenizer):
  """The base model's tokenizer (no template of its own) with the built-in gemma template: the ids transformers'
  apply_chat_template gives for the same template, <start_of_turn> and <end_of_turn> single special tokens;
  the loss mask covers exactly each assistant turn's content and its <end_of_turn>, which also stops generation."""
  from test_chat import CONVERSATIONS
  from itjax.data import chat
  from itjax.data.encode import encode_chat
  tok = gemma3_tokenizer
  assert tok.chat_template is None
  end = tok.tok.added_tokens_encoder["<end_of_turn>"]
  assert end in tok.eos_ids and tok.bos_id == 2
  template = chat.BUILTIN_TEMPLATES["gemma"]
  for conversation in CONVERSATIONS:
    for gen in (True, False):
      want = tok.tok.apply_chat_template(conversation, chat_template=template, tokenize=True,
                                         add_generation_prompt=gen)
      want = want["input_ids"] if hasattr(want, "keys") else want
      assert tok.encode_chat(conversation, gen, template="gemma") == want
  ids, mask = encode_chat(tok, CONVERSATIONS[2], template="gemma")
  trained = [ids[i] for i in range(len(ids)) if mask[i]]
  assert trained == tok.encode("4 5 6", add_bos=False) + [end] + tok.encode("10.", add_bos=False) + [end]
  assert ids[-1] != end and not mask[-1]  # the newline after the last <end_of_turn> is not a target


def test_the_gemma3_smoke_run_trains_resumes_exactly_evaluates_and_exports(gemma3, tmp_path, monkeypatch):
  """configs/gemma3_270m_lora.py:smoke on the real model: the loss falls; stopped after its step-2 checkpoint and
  run again it ends where the uninterrupted run did, bit for bit; `itjax eval` runs every suite on the workdir; the
  merged HF export and the PEFT adapter on transformers' reading of the GGUF give the run's logits."""
  import copy
  import json
  import shutil

  import peft
  from conftest import forward, itjax_in_process
  from test_export import CHAT, load_hf, torch_logits
  from test_train import ROOT, losses
  from itjax.interop import export, loading
  from itjax.interop.checkpoint import lora_spec, read_trained
  from itjax.model import lora as lora_lib
  ours, theirs = gemma3
  load_model = loading.load_model
  monkeypatch.setattr(loading, "load_model", lambda src, *a, **k: ours if src in ("gemma3-270m", ours.source)
                      and not a and not k else load_model(src, *a, **k))
  config = os.path.join(ROOT, "configs", "gemma3_270m_lora.py:smoke")
  workdir = str(tmp_path / "run")
  quiet = "--config.eval.suites=()"  # the evaluation below runs every suite, the tasks too
  done = itjax_in_process("train", "--config", config, "--workdir", workdir, quiet)
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads(done.stdout.strip().splitlines()[-1])
  assert summary["steps"] == 4 and summary["eval_loss_end"] < summary["eval_loss_start"]
  final, _ = read_trained(workdir)
  for name in os.listdir(os.path.join(workdir, "checkpoints")):  # stopped after step 2: its checkpoint kept
    if name != "2":
      shutil.rmtree(os.path.join(workdir, "checkpoints", name))
  again = itjax_in_process("train", "--config", config, "--workdir", workdir, quiet)
  assert again.returncode == 0 and "resuming" in again.stderr, again.stderr[-3000:]
  resumed, _ = read_trained(workdir)
  for a, b in zip(lora_lib.flatten(final).values(), lora_lib.flatten(resumed).values()):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert [s for s, _ in losses(workdir)][-2:] == [3, 4]

  data = tmp_path / "ifeval.jsonl"
  data.write_text("".join(json.dumps({"key": i, "prompt": p, "instruction_id_list": [c], "kwargs": [{}]}) + "\n"
                          for i, (p, c) in enumerate((("Name a colour, in lowercase.", "change_case:english_lowercase"),
                                                      ("List two fruits without commas.", "punctuation:no_comma")))))
  suites = "ifeval,tasks,latency,forgetting,rigidity,hallucination,judge"
  evaluated = itjax_in_process("eval", "--model", workdir, "--suites", suites, "--limit", "1", "--max_new_tokens",
                               "4", "--data", f"ifeval={data}", "--perturbations", "case", "--text_bytes", "2000",
                               "--out", str(tmp_path / "eval"), "--json")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert set(json.loads(evaluated.stdout.strip().splitlines()[-1])["suites"]) == set(suites.split(","))

  trained, meta = read_trained(workdir)
  tokens = np.asarray(ours.tokenizer.encode_chat(CHAT, template="gemma"))
  config_ = ours.config.replace(lora=lora_spec(meta), remat="none")
  want = forward(config_, lora_lib.join(trained, ours.params), tokens[None])[0]
  hf = load_hf(export.export_hf(workdir, str(tmp_path / "hf")))
  np.testing.assert_allclose(torch_logits(hf, tokens), want, atol=1e-3, rtol=0)
  del hf
  base = copy.deepcopy(theirs)
  assert np.abs(torch_logits(base, tokens) - want).max() > 1e-2  # the run moved the logits
  model = peft.PeftModel.from_pretrained(base, export.export_peft(workdir, str(tmp_path / "peft"))).eval()
  np.testing.assert_allclose(torch_logits(model, tokens), want, atol=1e-3, rtol=0)
