"""`load_model(SRC)`: one entry point for every model source a command accepts.

SRC is a Hugging Face model directory (config.json + safetensors + tokenizer files) or a `.gguf` file. A raw
SentencePiece `.model` is a tokenizer source only (`load_tokenizer`).
"""

from __future__ import annotations

import dataclasses
import os

from itjax.model.config import ModelConfig
from itjax.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer_dir


@dataclasses.dataclass
class LoadedModel:
  config: ModelConfig
  params: dict
  tokenizer: Tokenizer
  source: str


def _check_exists(src: str) -> None:
  if not os.path.exists(src):
    raise FileNotFoundError(f"model path {src!r} does not exist (expected a Hugging Face model directory or a "
                            ".gguf file)")


def load_tokenizer(src: str) -> Tokenizer:
  _check_exists(src)
  if src.endswith(".gguf"):
    from itjax.interop.gguf import load_gguf_tokenizer
    return load_gguf_tokenizer(src)
  if src.endswith(".model"):
    return SentencePieceTokenizer(src)
  return load_tokenizer_dir(src)


def load_model(src: str, dtype: str = "float32", param_dtype: str = "float32") -> LoadedModel:
  """(config, params, tokenizer) from a HF directory or a GGUF file; params are host numpy arrays."""
  _check_exists(src)
  if src.endswith(".gguf"):
    from itjax.interop.gguf import load_gguf
    return LoadedModel(*load_gguf(src, dtype, param_dtype), src)
  if not os.path.isdir(src):
    raise ValueError(f"model path {src!r} is neither a directory nor a .gguf file")
  from itjax.interop.hf import load_hf_model
  config, params = load_hf_model(src, dtype, param_dtype)
  return LoadedModel(config, params, load_tokenizer(src), src)
