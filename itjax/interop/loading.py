"""`load_model(SRC)`: one entry point for every model source a command accepts.

SRC is a Hugging Face model directory (config.json + safetensors + tokenizer files), a `.gguf` file, an `itjax
train` workdir (its base model with the latest checkpoint's trained params, LoRA merged into the kernels), or a
built-in model's name (itjax.io.demo_model: demo, smollm2-135m, gemma3-270m), fetched once.
A raw SentencePiece `.model` is a tokenizer source only (`load_tokenizer`).
"""

from __future__ import annotations

import dataclasses
import os

from itjax.errors import InputNotFound, UserError
from itjax.io.demo_model import resolve
from itjax.model.config import ModelConfig
from itjax.data.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer_dir


@dataclasses.dataclass
class LoadedModel:
  config: ModelConfig
  params: dict
  tokenizer: Tokenizer
  source: str


def _check_exists(src: str) -> None:
  from itjax.io.workdir import exists
  if not exists(src):
    raise InputNotFound(f"model path {src!r} does not exist (expected a Hugging Face model directory or a "
                        ".gguf file)")


def is_workdir(src: str) -> bool:
  from itjax.io.workdir import exists
  return exists(src, "checkpoints")  # also in a bucket (gs://...)


def load_tokenizer(src: str) -> Tokenizer:
  src = resolve(src)
  _check_exists(src)
  if is_workdir(src):
    from itjax.interop.checkpoint import read_meta
    return load_tokenizer(read_meta(src)["base"]["path"])
  if src.endswith(".gguf"):
    from itjax.interop.gguf import load_gguf_tokenizer
    return load_gguf_tokenizer(src)
  if src.endswith(".model"):
    return SentencePieceTokenizer(src)
  return load_tokenizer_dir(src)


def load_model(src: str, dtype: str = "float32", param_dtype: str = "float32") -> LoadedModel:
  """(config, params, tokenizer) from a HF directory, a GGUF file or a built-in model's name (demo, gemma3-270m);
  params are host numpy arrays."""
  src = resolve(src)
  _check_exists(src)
  if is_workdir(src):
    return load_workdir(src, dtype, param_dtype)
  if src.endswith(".gguf"):
    from itjax.interop.gguf import load_gguf
    return LoadedModel(*load_gguf(src, dtype, param_dtype), src)
  if not os.path.isdir(src):
    raise UserError(f"model path {src!r} is neither a directory nor a .gguf file")
  from itjax.interop.hf import load_hf_model
  config, params = load_hf_model(src, dtype, param_dtype)
  return LoadedModel(config, params, load_tokenizer(src), src)


def load_trained(workdir: str, step: int | None = None, dtype: str = "float32",
                 param_dtype: str = "float32") -> tuple[LoadedModel, dict, dict]:
  """(the base model, the checkpoint's trained params as host arrays, its metadata) of a training workdir."""
  import jax
  import numpy as np

  from itjax.interop.checkpoint import read_trained
  trained, meta = read_trained(workdir, step)
  return load_model(meta["base"]["path"], dtype, param_dtype), jax.tree.map(np.asarray, trained), meta


def load_workdir(workdir: str, dtype: str = "float32", param_dtype: str = "float32",
                 step: int | None = None) -> LoadedModel:
  """A training workdir as a plain model: base params with the trained ones in place and LoRA merged."""
  from itjax.model import lora
  from itjax.interop.checkpoint import lora_spec
  base, trained, meta = load_trained(workdir, step, dtype, param_dtype)
  config, params = lora.merge_adapters(base.config.replace(lora=lora_spec(meta)), lora.join(trained, base.params))
  return LoadedModel(config, params, base.tokenizer, workdir)
