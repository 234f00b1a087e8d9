"""Export out of training runs, loaded back by transformers and peft; PEFT adapters in."""

import copy
import json
import os

import numpy as np
import pytest

from itjax.model import lora as lora_lib
from itjax.interop import export
from itjax.training.loop import Trainer
from itjax.training.setup import setup
from conftest import forward, itjax_in_process
from test_train import host, load_config

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
import transformers  # noqa: E402

CHAT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Sort these words: pear, fig."}]


def trained_run(config, workdir):
  run = setup(config, workdir)
  Trainer(run).fit()
  return run


def itjax_logits(run, tokens):
  params = lora_lib.join(host(run.state["params"]), host(run.frozen))
  config = run.model_config.replace(remat="none", dtype="float32")
  return forward(config, params, tokens[None])[0]


def torch_logits(model, tokens):
  with torch.no_grad():
    return model(torch.as_tensor(tokens[None], dtype=torch.long)).logits[0].float().numpy()


def load_hf(path, **kw):
  model, info = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                                  output_loading_info=True, **kw)
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
  return model.eval()


@pytest.fixture(scope="module")
def lora_run(tiny_hf_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("lora") / "w")
  config = load_config(model=tiny_hf_dir, steps=3, eval_every=0, **{"lora.rslora": True, "lora.alpha": 7.0})
  return trained_run(config, workdir), workdir


def test_hf_and_peft_exports_reproduce_the_run(lora_run, tiny_hf_dir, tmp_path):
  run, workdir = lora_run
  tokens = np.asarray(run.tokenizer.encode_chat(CHAT))
  want = itjax_logits(run, tokens)
  hf_dir = export.export_hf(workdir, str(tmp_path / "hf"))
  np.testing.assert_allclose(torch_logits(load_hf(hf_dir), tokens), want, atol=1e-4, rtol=0)
  peft_dir = export.export_peft(workdir, str(tmp_path / "peft"))
  adapter = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
  assert adapter["use_rslora"] is True and adapter["lora_alpha"] == 7.0 and adapter["r"] == 4
  base = load_hf(tiny_hf_dir)
  assert np.abs(torch_logits(base, tokens) - want).max() > 1e-2  # the run moved the logits, so the checks can fail
  model = peft.PeftModel.from_pretrained(base, peft_dir).eval()
  np.testing.assert_allclose(torch_logits(model, tokens), want, atol=1e-4, rtol=0)
  # The exported tokenizer renders the same chat tokens.
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  assert tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)["input_ids"] == tokens.tolist()
  generation = json.load(open(os.path.join(hf_dir, "generation_config.json")))
  assert generation["eos_token_id"] == list(run.tokenizer.eos_ids)


def test_sharded_bfloat16_export_and_overwrite(lora_run, tmp_path):
  run, workdir = lora_run
  out = str(tmp_path / "hf")
  export.export_hf(workdir, out, dtype="bfloat16", shard_bytes=40_000)
  index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
  assert len(set(index["weight_map"].values())) > 1
  tokens = np.asarray(run.tokenizer.encode_chat(CHAT))
  model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  assert model.dtype == torch.bfloat16
  np.testing.assert_allclose(torch_logits(model, tokens), itjax_logits(run, tokens), atol=0.1, rtol=0)
  with pytest.raises(FileExistsError, match="pass --overwrite"):
    export.export_hf(workdir, out)
  export.export_hf(workdir, out, overwrite=True)
  assert os.path.exists(os.path.join(out, "model.safetensors"))
  assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]  # no temporary directory left behind


def test_full_fine_tuning_exports_to_hf_only(tiny_hf_dir, tmp_path):
  workdir = str(tmp_path / "full")
  run = trained_run(load_config(arg="full", model=tiny_hf_dir, steps=2, eval_every=0), workdir)
  tokens = np.asarray(run.tokenizer.encode_chat(CHAT))
  hf_dir = export.export_hf(workdir, str(tmp_path / "hf"))
  np.testing.assert_allclose(torch_logits(load_hf(hf_dir), tokens), itjax_logits(run, tokens), atol=1e-4, rtol=0)
  with pytest.raises(ValueError, match="full fine-tuning run has no LoRA adapter"):
    export.export_peft(workdir, str(tmp_path / "peft"))


def make_peft_adapter(base_dir, out, r=4, alpha=8, targets=("q_proj", "v_proj", "down_proj"), **options):
  torch.manual_seed(1)
  model = peft.get_peft_model(load_hf(base_dir), peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                                                                 init_lora_weights=False, **options))
  model.save_pretrained(out)
  return model.eval()


def test_a_peft_adapter_is_imported_and_continued(tiny_hf_dir, tmp_path):
  reference = make_peft_adapter(tiny_hf_dir, str(tmp_path / "adapter"))
  config = load_config(model=tiny_hf_dir, steps=2, eval_every=0, init_adapter=str(tmp_path / "adapter"))
  run = setup(config, str(tmp_path / "w"))
  assert run.config.lora.rank == 4 and run.config.lora.alpha == 8.0
  assert sorted(k.split("/")[2] for k in lora_lib.flatten(run.state["params"]) if k.endswith("lora_a")) == [
      "down_proj", "q_proj", "v_proj"]
  tokens = np.asarray(run.tokenizer.encode_chat(CHAT))
  np.testing.assert_allclose(itjax_logits(run, tokens), torch_logits(reference, tokens), atol=1e-4, rtol=0)
  Trainer(run).fit()  # continued tuning from it


@pytest.mark.parametrize("rslora", [False, True])
def test_a_peft_adapter_with_per_module_ranks_and_alphas_keeps_its_function(tiny_hf_dir, tmp_path, rslora):
  """rank_pattern and alpha_pattern (by module name and by one layer's full name): itjax's single rank and scale
  hold them exactly (zero-padded ranks, scales folded into lora_b); they used to load with the global scale."""
  reference = make_peft_adapter(tiny_hf_dir, str(tmp_path / "adapter"), use_rslora=rslora,
                                rank_pattern={"q_proj": 2, "model.layers.1.mlp.down_proj": 6},
                                alpha_pattern={"v_proj": 20, "model.layers.0.mlp.down_proj": 3})
  saved = json.load(open(tmp_path / "adapter" / "adapter_config.json"))
  assert saved["rank_pattern"] and saved["alpha_pattern"]
  config = load_config(model=tiny_hf_dir, steps=1, eval_every=0, init_adapter=str(tmp_path / "adapter"))
  run = setup(config, str(tmp_path / "w"))
  assert run.config.lora.rank == 6 and run.config.lora.alpha == 8.0
  tokens = np.asarray(run.tokenizer.encode_chat(CHAT))
  np.testing.assert_allclose(itjax_logits(run, tokens), torch_logits(reference, tokens), atol=1e-4, rtol=0)


def test_a_merged_export_holds_at_most_two_layers_beside_the_params(tmp_path):
  """A 280 MB random model with LoRA on every projection, written as merged safetensors: numpy's peak allocation
  during the export stays under two layers' bytes above the params already held, and the merge is exact."""
  import tracemalloc
  from safetensors.numpy import load_file
  from itjax.model.config import LoraSpec, ModelConfig
  from itjax.model.llama import param_shapes
  config = ModelConfig(vocab_size=16000, dim=768, mlp_dim=3072, num_layers=6, num_heads=12, num_kv_heads=4,
                       head_dim=64, lora=LoraSpec(8, 16.0))
  rng = np.random.default_rng(0)
  flat = {k: rng.standard_normal(s.shape, np.float32) * 0.02 for k, s in lora_lib.flatten(param_shapes(config)).items()}
  params = lora_lib.unflatten(flat)
  total = sum(v.nbytes for k, v in flat.items() if "lora" not in k)
  layer = sum(v.nbytes for k, v in flat.items() if k.startswith("layers/") and "lora" not in k) // config.num_layers
  assert total > 250e6
  tracemalloc.start()
  try:
    base = tracemalloc.get_traced_memory()[0]
    names = export.save_safetensors(export.hf_tensors(config, params), str(tmp_path), "float32", shard_bytes=10 ** 9)
    peak = tracemalloc.get_traced_memory()[1] - base
  finally:
    tracemalloc.stop()
  assert names == ["model.safetensors"] and peak < 2 * layer, f"peak {peak / 1e6:.1f} MB, a layer {layer / 1e6:.1f} MB"
  written = load_file(str(tmp_path / "model.safetensors"))
  assert len(written) == 2 + 9 * config.num_layers + (0 if config.tie_embeddings else 1)
  a, b, w = (flat[f"layers/mlp/down_proj/{k}"][3].astype(np.float64) for k in ("lora_a", "lora_b", "kernel"))
  want = (w + config.lora.scale * a @ b).astype(np.float32).T
  np.testing.assert_array_equal(written["model.layers.3.mlp.down_proj.weight"], want)
  np.testing.assert_array_equal(written["model.layers.3.input_layernorm.weight"], flat["layers/attn_norm/scale"][3])


def test_export_and_import_errors(lora_run, tiny_hf_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    os.makedirs(tmp_path / "empty" / "checkpoints")
    export.export_hf(str(tmp_path / "empty"), str(tmp_path / "out"))
  run, _ = lora_run
  make_peft_adapter(tiny_hf_dir, str(tmp_path / "adapter"))
  wider = run.model_config.replace(dim=run.model_config.dim * 2, lora=None)
  with pytest.raises(ValueError, match="has shape .* expected"):
    export.read_peft_adapter(str(tmp_path / "adapter"), wider)
  with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
    export.read_peft_adapter(str(tmp_path), run.model_config)


# SmolLM2's logits reach about 37 and pass through 30 layers: the base model alone differs from transformers by
# 7.5e-5, and merging the adapters into the kernels moves itjax's own logits by 1.0e-4 (float32 rounding in a
# different order). So the checks against the exports use 2e-4 here; the tiny model above holds 1e-4.
SMOLLM2_ATOL = 2e-4


@pytest.mark.slow
def test_smollm2_smoke_config_trains_and_exports(smollm2_gguf, itjax_smollm2, hf_smollm2_model, tmp_path,
                                                 monkeypatch):
  """`itjax train` on the SmolLM2 smoke config (a GGUF base): the run's log and files, then HF export ==
  peft(GGUF base + adapter) == itjax's own unmerged model, on a chat prompt. One training for both."""
  from itjax.interop import loading
  from itjax.interop.checkpoint import lora_spec, read_trained
  from test_train import check_smoke_run
  base = itjax_smollm2  # the run's base: the demo GGUF, already loaded for the other SmolLM2 tests
  load_model = loading.load_model

  def loaded_once(src, dtype="float32", param_dtype="float32"):  # training and export load it from here
    same = os.path.realpath(src) == os.path.realpath(smollm2_gguf) and (dtype, param_dtype) == ("float32",) * 2
    return base if same else load_model(src, dtype, param_dtype)

  monkeypatch.setattr(loading, "load_model", loaded_once)
  workdir = str(tmp_path / "smoke")
  check_smoke_run(workdir)
  trained, meta = read_trained(workdir)
  tokens = np.asarray(base.tokenizer.encode_chat(CHAT))
  config = base.config.replace(lora=lora_spec(meta), remat="none", dtype="float32")
  want = forward(config, lora_lib.join(trained, base.params), tokens[None])[0]
  hf_dir = export.export_hf(workdir, str(tmp_path / "hf"))
  hf = load_hf(hf_dir)
  np.testing.assert_allclose(torch_logits(hf, tokens), want, atol=SMOLLM2_ATOL, rtol=0)
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)  # the GGUF's tokenizer and template, exported
  assert tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)["input_ids"] == tokens.tolist()
  del hf
  base = copy.deepcopy(hf_smollm2_model)  # transformers' reading of the GGUF; peft changes the layers it wraps
  assert np.abs(torch_logits(base, tokens) - want).max() > 1e-2  # the run moved the logits
  model = peft.PeftModel.from_pretrained(base, export.export_peft(workdir, str(tmp_path / "peft"))).eval()
  np.testing.assert_allclose(torch_logits(model, tokens), want, atol=SMOLLM2_ATOL, rtol=0)


def test_export_command(lora_run, tmp_path):
  _, workdir = lora_run
  run = lambda *a: itjax_in_process("export", "--workdir", workdir, *a)  # noqa: E731
  out = str(tmp_path / "adapter")
  result = run("--format", "peft", "--out", out)
  assert result.returncode == 0, result.stderr
  assert f"{workdir}: the checkpoint of step " in result.stderr and "(the newest)" in result.stderr  # which one
  assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
  again = run("--format", "peft", "--out", out)
  assert again.returncode == 1 and "pass --overwrite" in again.stderr
  assert "--format hf|peft" in run("--format", "onnx", "--out", out).stderr


FAMILIES = {
    "qwen3": dict(head_dim=16, tie_word_embeddings=False),
    "gemma2": dict(head_dim=16, sliding_window=8, query_pre_attn_scalar=24, attn_logit_softcapping=5.0,
                   final_logit_softcapping=8.0),
    "gemma3_text": dict(head_dim=32, num_key_value_heads=1, sliding_window=8, query_pre_attn_scalar=24,
                        layer_types=["sliding_attention", "full_attention"],
                        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                         "full_attention": {"rope_type": "linear", "rope_theta": 1e6,
                                                            "factor": 4.0}}),
}


@pytest.mark.slow
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_each_family_trains_and_exports_to_hf_and_peft(model_type, tmp_path):
  """Qwen3, Gemma 2 and Gemma 3 (tiny random models, the tests' tokenizer): a LoRA run's merged HF export and its
  PEFT adapter on the base, loaded by transformers and peft, give the run's logits."""
  from conftest import make_llama3_style_tokenizer
  tok = make_llama3_style_tokenizer()
  torch.manual_seed(0)
  overrides = {"num_key_value_heads": 2, **FAMILIES[model_type]}
  hf_config = transformers.AutoConfig.for_model(
      model_type, vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **overrides)
  base_dir = str(tmp_path / "base")
  transformers.AutoModelForCausalLM.from_config(hf_config).save_pretrained(base_dir)
  tok.save_pretrained(base_dir)
  workdir = str(tmp_path / "run")
  run = trained_run(load_config(model=base_dir, steps=2, eval_every=0, checkpoint_every=2,
                                **{"lora.rank": 2, "lora.alpha": 4.0, "tasks.n": 16}), workdir)
  tokens = np.asarray(run.tokenizer.encode_chat(CHAT))
  want = itjax_logits(run, tokens)
  hf = load_hf(export.export_hf(workdir, str(tmp_path / "hf")), attn_implementation="eager")
  assert type(hf).__name__ == export.ARCHITECTURES[model_type]
  np.testing.assert_allclose(torch_logits(hf, tokens), want, atol=1e-4, rtol=0)
  base = load_hf(base_dir, attn_implementation="eager")
  assert np.abs(torch_logits(base, tokens) - want).max() > 1e-3  # the run moved the logits
  model = peft.PeftModel.from_pretrained(base, export.export_peft(workdir, str(tmp_path / "peft"))).eval()
  np.testing.assert_allclose(torch_logits(model, tokens), want, atol=1e-4, rtol=0)
