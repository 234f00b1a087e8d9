"""Bad input stops with an error that names the problem."""

import json
import os
import shutil

import pytest
from safetensors.numpy import load_file, save_file

from itjax.loading import load_model
from itjax.prompts import read_prompts


def test_missing_model_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"model path '.*nowhere' does not exist"):
    load_model(str(tmp_path / "nowhere"))


def test_unsupported_architecture(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
  with pytest.raises(ValueError, match=r"config.json: unsupported architecture model_type='gpt2'.*GPT2LMHeadModel.*"
                                       r"supports model_type in \('llama', 'mistral', 'qwen2'\)"):
    load_model(str(tmp_path))


def test_safetensors_missing_a_tensor(tiny_hf_dir, tmp_path):
  broken = tmp_path / "broken"
  shutil.copytree(tiny_hf_dir, broken)
  tensors = load_file(str(broken / "model.safetensors"))
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, str(broken / "model.safetensors"))
  with pytest.raises(KeyError, match=r"missing tensor 'model.layers.1.mlp.up_proj.weight'"):
    load_model(str(broken))


def test_safetensors_wrong_shape(tiny_hf_dir, tmp_path):
  broken = tmp_path / "broken"
  shutil.copytree(tiny_hf_dir, broken)
  tensors = load_file(str(broken / "model.safetensors"))
  tensors["model.layers.0.self_attn.k_proj.weight"] = tensors["model.layers.0.self_attn.q_proj.weight"]
  save_file(tensors, str(broken / "model.safetensors"))
  with pytest.raises(ValueError, match=r"layer 0: self_attn.k_proj.weight' has shape \(64, 64\), expected \(32, 64\)"):
    load_model(str(broken))


def test_missing_tokenizer_files(tiny_hf_dir, tmp_path):
  bare = tmp_path / "bare"
  shutil.copytree(tiny_hf_dir, bare, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*", "chat_template*"))
  with pytest.raises(FileNotFoundError, match="no tokenizer files"):
    load_model(str(bare))


def test_pickle_checkpoints_are_refused(tiny_hf_dir, tmp_path):
  broken = tmp_path / "pickled"
  shutil.copytree(tiny_hf_dir, broken)
  os.remove(broken / "model.safetensors")
  (broken / "pytorch_model.bin").write_bytes(b"not loaded")
  with pytest.raises(FileNotFoundError, match="pickle checkpoints are never loaded"):
    load_model(str(broken))


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "ok"', r"p.jsonl:2: not valid JSON"),
    ('["a list"]', r"p.jsonl:2: expected a JSON object, got list"),
    ('{"text": "hi"}', r"p.jsonl:2: expected a 'prompt' string or a 'messages' list, got keys \['text'\]"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', r"p.jsonl:2: 'messages': message 0: expected"),
    ('{"prompt": ""}', r"p.jsonl:2: 'prompt' is empty"),
])
def test_bad_prompts_file_line(tmp_path, line, message):
  path = tmp_path / "p.jsonl"
  path.write_text('{"prompt": "fine"}\n' + line + "\n")
  with pytest.raises(ValueError, match=message):
    read_prompts(str(path))


def test_prompts_file_invalid_utf8(tmp_path):
  path = tmp_path / "p.jsonl"
  path.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
  with pytest.raises(ValueError, match=r"p.jsonl:2: not valid UTF-8"):
    read_prompts(str(path))
