"""A GGUF file's conversion, kept for the next load: reading a GGUF parses its metadata field by field (the
tokenizer's vocabulary and merges: seconds for a 50k vocabulary) and dequantises every tensor, on every load. The
result is saved once per file content (its sha256) under CACHE/gguf/SHA/ (CACHE: itjax's cache directory,
`$ITJAX_CACHE` or `~/.cache/itjax`): the params as float32 safetensors, the model config as JSON and the tokenizer
as transformers saves it. A later load of the same file reads those (about a second for SmolLM2-135M instead of
five to ten).

Only files up to LIMIT_BYTES are kept (the float32 copy is several times the quantised file); `ITJAX_GGUF_CACHE=0`
turns it off. A folder is written under a temporary name and renamed when complete, so a half-written one is never
read; one that does not read is ignored (the GGUF is read again).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np

from itjax.io.log import get as get_logger

log = get_logger(__name__)

LIMIT_BYTES = 2 * 1024 ** 3
VERSION = "v1"  # of the folder's layout: a change starts new folders


def folder(path: str) -> str | None:
  """Where `path`'s conversion is kept, or None (turned off, or a file over LIMIT_BYTES)."""
  if os.environ.get("ITJAX_GGUF_CACHE", "1") == "0" or os.path.getsize(path) > LIMIT_BYTES:
    return None
  from itjax.io.demo_model import cache_dir, sha256_of
  return os.path.join(cache_dir(), "gguf", f"{sha256_of(path)[:24]}-{VERSION}")


def read_tokenizer(where: str | None):
  if not where or not os.path.isdir(where):
    return None
  try:
    from transformers import PreTrainedTokenizerFast

    from itjax.data.tokenizer import with_turn_ends
    return with_turn_ends(PreTrainedTokenizerFast.from_pretrained(os.path.join(where, "tokenizer")))
  except Exception as e:  # noqa: BLE001 -- a cache that does not read is read again from the GGUF
    log.debug("GGUF cache %s: tokenizer unreadable (%s)", where, e)
    return None


def read(where: str | None, dtype: str, param_dtype: str):
  """(config, params, tokenizer) kept in `where`, params in param_dtype; None when there is none or it fails."""
  if not where or not os.path.isdir(where):
    return None
  try:
    from safetensors.numpy import load_file

    from itjax.model import lora as lora_lib
    from itjax.model.config import ModelConfig
    with open(os.path.join(where, "config.json")) as f:
      config = ModelConfig.from_dict(json.load(f))
    config = config.replace(dtype=dtype, param_dtype=param_dtype)
    flat = load_file(os.path.join(where, "params.safetensors"))
    params = lora_lib.unflatten({k: v.astype(np.dtype(param_dtype)) for k, v in flat.items()})
    tokenizer = read_tokenizer(where)
    return None if tokenizer is None else (config, params, tokenizer)
  except Exception as e:  # noqa: BLE001 -- as above
    log.debug("GGUF cache %s: unreadable (%s)", where, e)
    return None


def write(where: str | None, config, params: dict, tokenizer) -> None:
  """Keeps a float32 conversion in `where` (written aside, then renamed); a failure only logs."""
  if not where or os.path.isdir(where):
    return
  from safetensors.numpy import save_file

  from itjax.model import lora as lora_lib
  parent = os.path.dirname(where)
  try:
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
      fields = dataclasses.asdict(config.replace(dtype="float32", param_dtype="float32", lora=None))
      with open(os.path.join(staging, "config.json"), "w") as f:
        json.dump(fields, f)
      save_file({k: np.ascontiguousarray(v, np.float32) for k, v in lora_lib.flatten(params).items()},
                os.path.join(staging, "params.safetensors"))
      tokenizer.tok.save_pretrained(os.path.join(staging, "tokenizer"))
      os.rename(staging, where)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  except OSError as e:
    log.debug("GGUF cache %s: not written (%s)", where, e)
