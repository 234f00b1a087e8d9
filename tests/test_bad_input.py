"""Bad input stops with an error that names the problem."""

import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from itjax.interop.loading import load_model
from itjax.data.prompts import read_prompts


def test_missing_model_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"model path '.*nowhere' does not exist"):
    load_model(str(tmp_path / "nowhere"))


def test_unsupported_architecture(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
  with pytest.raises(ValueError, match=r"config.json: unsupported architecture model_type='gpt2'.*GPT2LMHeadModel.*"
                                       r"supports model_type in \('llama', 'mistral', 'qwen2', 'qwen3', 'gemma2', "
                                       r"'gemma3_text'\)"):
    load_model(str(tmp_path))


def test_an_unsupported_gguf_architecture_is_named_with_the_supported_ones():
  from itjax.interop.gguf import config_from_metadata
  with pytest.raises(ValueError, match=r"m.gguf: unsupported GGUF architecture 'phi3'; itjax supports \('llama', "
                                       r"'qwen2', 'qwen3', 'gemma3'\)"):
    config_from_metadata({"general.architecture": "phi3"}, set(), "m.gguf")


@pytest.mark.parametrize("change,message", [
    ({"layer_types": ["sliding_attention"] * 3}, r"layer_types must give each of the 4 layers one of"),
    ({"layer_types": ["sliding_attention", "local", "full_attention", "full_attention"]},
     r"layer_types must give each of the 4 layers one of \('full_attention', 'sliding_attention'\)"),
    ({"layer_types": None, "sliding_window_pattern": 0}, r"sliding_window_pattern must be a positive integer, got 0"),
    ({"sliding_window": None}, r"missing required key 'sliding_window'"),
    ({"hidden_activation": "relu"}, r"hidden_activation='relu' is not supported"),
])
def test_a_bad_gemma_config_names_the_key(tmp_path, change, message):
  """Gemma's per-layer attention kinds: a list of the wrong length or with an unknown kind, a pattern below 1, a
  sliding layer without a window, an activation other than GELU (tanh) are refused naming the key. A pattern that
  does not divide the layers is not: Gemma 3 1B has 26 layers every sixth of which is global."""
  from itjax.model.config import from_hf_config
  hf = {"model_type": "gemma3_text", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 4, "num_attention_heads": 2, "head_dim": 8, "sliding_window": 4,
        "layer_types": ["sliding_attention"] * 3 + ["full_attention"]}
  with pytest.raises(ValueError, match=message):
    from_hf_config({**hf, **change}, "config.json")
  odd = from_hf_config({**hf, "num_hidden_layers": 26, "layer_types": None, "sliding_window_pattern": 6})
  assert odd.layer_types.count("full_attention") == 4 and odd.layer_types[5] == "full_attention"


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


def tiny_gguf(path):
  """A small GGUF file (a few metadata fields and two float32 tensors) to cut and corrupt."""
  import gguf
  import numpy as np
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_uint32("llama.block_count", 1)
  w.add_string("general.name", "a tiny model for damaged-file tests")
  w.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(8, 4))
  w.add_tensor("output_norm.weight", np.ones(4, np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path.read_bytes()


def read_every_tensor(path):
  from itjax.interop import gguf as itjax_gguf
  reader, _ = itjax_gguf._read(str(path))
  return [itjax_gguf.tensor_values(str(path), t) for t in reader.tensors]


def test_damaged_gguf_files_are_refused_naming_the_file(tmp_path):
  """Cut at every region (header, metadata, tensor infos, data) and at 40 seeded offsets, or with a metadata or
  tensor-info length flipped to a huge value: always an error naming the file, never a crash or a huge allocation."""
  import random
  import tracemalloc
  from itjax.errors import UserError
  import gguf
  good = tiny_gguf(tmp_path / "good.gguf")
  assert [t.shape for t in read_every_tensor(tmp_path / "good.gguf")] == [(8, 4), (4,)]
  reader = gguf.GGUFReader(str(tmp_path / "good.gguf"))
  end = max(t.data_offset + t.n_bytes for t in reader.tensors)  # what follows is padding: cutting it harms nothing
  regions = [0, 4, 8, 16, 24, reader.fields["general.name"].offset, reader.tensors[0].data_offset - 1,
             reader.tensors[0].data_offset, reader.tensors[1].data_offset, end - 1]
  rng = random.Random(0)
  cuts = sorted(set(regions[1:]) | {rng.randrange(1, end) for _ in range(40)})
  damaged = [("cut", c, good[:c]) for c in cuts]
  # The uint64 lengths: the first key's length (offset 24) and the name string's length, set to 2**62.
  name_at = good.index(b"a tiny model") - 8
  for where in (24, name_at):
    damaged.append(("length", where, good[:where] + (1 << 62).to_bytes(8, "little") + good[where + 8:]))
  tracemalloc.start()
  try:
    for kind, where, data in damaged:
      path = tmp_path / f"{kind}-{where}.gguf"
      path.write_bytes(data)
      with pytest.raises(UserError, match=rf"{path}: (not a readable GGUF file|tensor '.*' cannot be read)"):
        read_every_tensor(path)
    assert tracemalloc.get_traced_memory()[1] < 50e6  # nothing allocated for a lying length
  finally:
    tracemalloc.stop()


def test_a_safetensors_file_that_lies_and_a_config_of_wrong_types_are_refused(tiny_hf_dir, tmp_path):
  """A header longer than the file, offsets past the end, a cut file; config.json values of the wrong type."""
  import struct
  from itjax.errors import UserError
  good = (Path(tiny_hf_dir) / "model.safetensors").read_bytes()
  (n,) = struct.unpack("<Q", good[:8])
  header = json.loads(good[8:8 + n])
  name = next(k for k in header if k != "__metadata__")
  header[name]["data_offsets"][1] += 10 ** 9  # a tensor that ends a gigabyte past the file
  lying = json.dumps(header).encode()
  lying += b" " * (-len(lying) % 8)
  cases = {"long header": (1 << 40).to_bytes(8, "little") + good[8:], "cut": good[:len(good) // 2],
           "offsets": struct.pack("<Q", len(lying)) + lying + good[8 + n:]}
  for case, data in cases.items():
    broken = tmp_path / case.replace(" ", "_")
    shutil.copytree(tiny_hf_dir, broken)
    (broken / "model.safetensors").write_bytes(data)
    with pytest.raises(UserError, match=rf"{broken}/model.safetensors: not a readable safetensors file"):
      load_model(str(broken))
  config = json.loads((Path(tiny_hf_dir) / "config.json").read_text())
  for key, value in (("hidden_size", "64"), ("num_hidden_layers", 2.0), ("vocab_size", True), ("rms_norm_eps", "x"),
                     ("num_key_value_heads", -2)):
    broken = tmp_path / f"config_{key}"
    shutil.copytree(tiny_hf_dir, broken)
    (broken / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(UserError, match=rf"config.json: {key} must be a positive (integer|number), got {value!r}"):
      load_model(str(broken))


def test_jsonl_extremes_are_read_or_refused_by_line(tmp_path):
  """A 10 MB line is read; nesting 10,000 deep, NaN and Infinity are refused naming the line (not a crash)."""
  from itjax.data import formats
  from itjax.errors import UserError
  from itjax.io.jsonl import objects
  path = tmp_path / "extremes.jsonl"
  path.write_text(json.dumps({"instruction": "Repeat.", "output": "x" * 10_000_000}) + "\n")
  assert len(formats.read_records(str(path))[0][0].messages[1]["content"]) == 10_000_000
  for line, reason in (('{"a": ' * 10_000 + "1" + "}" * 10_000, "nested too deeply"),
                       ('{"instruction": "a", "output": NaN}', "NaN is not a JSON value"),
                       ('{"instruction": "a", "output": -Infinity}', "-Infinity is not a JSON value")):
    path.write_text('{"instruction": "fine", "output": "ok"}\n' + line + "\n")
    for read in (lambda: formats.read_records(str(path)), lambda: list(objects(str(path), "data"))):
      with pytest.raises(UserError, match=rf"extremes.jsonl:2: not valid JSON \({reason}"):
        read()
