"""GGUF files -> (ModelConfig, params, tokenizer), dequantised with the `gguf` package.

llama.cpp stores Llama's q/k projection rows permuted for its interleaved rotary layout; they are put back in HF's
half-split order here (Qwen and Gemma files are not permuted). Gemma files hold each RMSNorm scale plus one (llama.cpp
multiplies by the stored value); the one is taken off again. What a Gemma 3 file leaves out is llama.cpp's (and
transformers') fixed choice: every sixth layer global, the others sliding with RoPE base 10,000, queries scaled by
head_dim ** -0.5 (by (dim / heads) ** -0.5 for the 27B model). The tokenizer is rebuilt from the file's metadata
with transformers' GGUF tokenizer converters, as `AutoTokenizer.from_pretrained(..., gguf_file=...)` does.
"""

from __future__ import annotations

import os

import gguf
import numpy as np

from itjax.errors import InputNotFound, MissingEntry, UserError, brief
from itjax.interop.hf import build_params
from itjax.model.config import ModelConfig, RopeScaling
from itjax.data.tokenizer import HFTokenizer, with_turn_ends

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")
GEMMA3_27B_DIM = 5376  # the one Gemma 3 size whose queries are scaled by (dim / heads) ** -0.5, not head_dim's


def _family_fields(arch: str, get, dim: int, heads: int, head_dim: int, layers: int) -> dict:
  """The ModelConfig fields in which a Qwen3 or Gemma 3 file differs from a Llama one."""
  if arch == "qwen3":
    return {"qk_norm": True, "model_type": "qwen3"}
  if arch != "gemma3":
    return {"qkv_bias": arch == "qwen2", "model_type": "qwen2" if arch == "qwen2" else "llama"}
  return {"model_type": "gemma3_text", "qk_norm": True, "post_norms": True, "norm_offset": 1.0,
          "activation": "gelu_tanh", "embed_scale": True, "sliding_window": int(get("attention.sliding_window")),
          "layer_types": tuple("full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)),
          "rope_local_theta": 10000.0,
          "query_pre_attn_scalar": float(dim / heads if dim == GEMMA3_27B_DIM else head_dim)}


def config_from_metadata(meta: dict, tensor_names: set[str], source: str) -> ModelConfig:
  arch = meta.get("general.architecture")
  if arch not in SUPPORTED_ARCHS:
    raise UserError(f"{source}: unsupported GGUF architecture {arch!r}; itjax supports {SUPPORTED_ARCHS}")

  def get(key, default=None):
    value = meta.get(f"{arch}.{key}", default)
    if value is None:
      raise UserError(f"{source}: GGUF metadata is missing {arch}.{key}")
    return value

  if "rope_freqs.weight" in tensor_names:
    raise UserError(f"{source}: per-frequency RoPE factors (rope_freqs.weight, llama3 scaling) are not supported "
                    "in GGUF files yet; load the HF directory instead")
  scaling = get("rope.scaling.type", "none")
  if scaling not in ("none", "linear"):
    raise UserError(f"{source}: GGUF rope scaling {scaling!r} is not supported; expected 'none' or 'linear'")
  rope = RopeScaling("linear", float(get("rope.scaling.factor"))) if scaling == "linear" else RopeScaling()
  dim, heads = int(get("embedding_length")), int(get("attention.head_count"))
  layers, head_dim = int(get("block_count")), int(get("attention.key_length", dim // heads))
  vocab = meta.get(f"{arch}.vocab_size") or len(meta["tokenizer.ggml.tokens"])
  return ModelConfig(
      vocab_size=int(vocab), dim=dim, mlp_dim=int(get("feed_forward_length")), num_layers=layers,
      num_heads=heads, num_kv_heads=int(get("attention.head_count_kv", heads)), head_dim=head_dim,
      rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")), rope_theta=float(get("rope.freq_base", 10000.0)),
      rope_scaling=rope, max_position_embeddings=int(get("context_length", 4096)),
      tie_embeddings="output.weight" not in tensor_names,
      **_family_fields(arch, get, dim, heads, head_dim, layers))


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Inverse of llama.cpp's q/k row permutation: per head, interleaved pairs back to two halves."""
  return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _read(path: str) -> tuple[gguf.GGUFReader, dict]:
  """The reader and its metadata; a file cut short or with lying lengths is an error naming it. The reader maps the
  file and checks each length against it, so a lying length is refused, never allocated."""
  if not os.path.isfile(path):
    raise InputNotFound(f"model path {path!r} does not exist")
  try:
    reader = gguf.GGUFReader(path)
    return reader, {name: field.contents() for name, field in reader.fields.items()}
  except Exception as e:  # the gguf package raises ValueError, IndexError, KeyError, struct and numpy errors
    raise UserError(f"{path}: not a readable GGUF file ({brief(e, 200)})") from None


def tensor_values(path: str, t) -> np.ndarray:
  """A tensor's values as float32 [rows, cols] (GGUF lists the dims innermost first); errors name the tensor."""
  try:
    return gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(int(d) for d in t.shape[::-1]))
  except Exception as e:  # data cut short or an unknown quantisation
    raise UserError(f"{path}: tensor {t.name!r} cannot be read ({brief(e, 200)})") from None


def load_gguf(path: str, dtype: str = "float32",
              param_dtype: str = "float32") -> tuple[ModelConfig, dict, HFTokenizer]:
  """(ModelConfig, params, tokenizer) from one read of a GGUF file, or from its conversion kept by an earlier load
  (itjax.interop.gguf_cache)."""
  from itjax.interop import gguf_cache
  if not os.path.isfile(path):
    raise InputNotFound(f"model path {path!r} does not exist")
  where = gguf_cache.folder(path)
  kept = gguf_cache.read(where, dtype, param_dtype)
  if kept is not None:
    return kept
  config, params, tokenizer = _convert(path, dtype, param_dtype)
  if param_dtype == "float32":
    gguf_cache.write(where, config, params, tokenizer)
  return config, params, tokenizer


def _convert(path: str, dtype: str, param_dtype: str) -> tuple[ModelConfig, dict, HFTokenizer]:
  reader, meta = _read(path)
  tensors = {t.name: t for t in reader.tensors}
  config = config_from_metadata(meta, set(tensors), path).replace(dtype=dtype, param_dtype=param_dtype)
  permuted = meta["general.architecture"] == "llama"

  def get(name, layer):
    full = name if layer is None else f"blk.{layer}.{name}"
    if full not in tensors:
      raise MissingEntry(f"{path}: GGUF file is missing tensor {full!r}")
    t = tensors[full]
    w = tensor_values(path, t)
    if permuted and name == "attn_q.weight":
      w = _unpermute(w, config.num_heads)
    elif permuted and name == "attn_k.weight":
      w = _unpermute(w, config.num_kv_heads)
    elif config.norm_offset and name.endswith("norm.weight"):
      w = w - np.float32(config.norm_offset)
    return w

  return config, build_params(config, get, source=path, column=2), tokenizer_from_metadata(meta)


def load_gguf_tokenizer(path: str) -> HFTokenizer:
  from itjax.interop import gguf_cache
  if os.path.isfile(path):
    kept = gguf_cache.read_tokenizer(gguf_cache.folder(path))
    if kept is not None:
      return kept
  return tokenizer_from_metadata(_read(path)[1])


def tokenizer_from_metadata(meta: dict) -> HFTokenizer:
  """The tokenizer and chat template described by a GGUF file's metadata."""
  from transformers import PreTrainedTokenizerFast
  from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

  groups = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
            for group, renames in GGUF_TOKENIZER_MAPPING.items()}
  tokenizer_dict, tokenizer_config = groups["tokenizer"], groups["tokenizer_config"]
  if tokenizer_dict.get("tokenizer_type") == "llama":  # sentencepiece vocabularies add BOS unless told otherwise
    tokenizer_config.setdefault("add_bos_token", True)
  tokens = tokenizer_dict["tokens"]
  for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unk_token_id"),
                    ("pad_token", "pad_token_id")):
    token_id = tokenizer_dict.get(key)
    tokenizer_config[name] = tokens[token_id] if token_id is not None else None
  backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tokenizer_dict)
  tok = PreTrainedTokenizerFast(tokenizer_object=backend, **{**tokenizer_config, **extra})
  return with_turn_ends(tok)
