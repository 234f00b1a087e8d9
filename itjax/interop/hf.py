"""Hugging Face model directories -> (ModelConfig, params): config.json and safetensors (single or sharded).

The tensor-name table here is the one place that says which HF tensor fills which itjax param; the GGUF reader
uses it too. Pickle checkpoints (`pytorch_model.bin`) are refused, never loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import safe_open

from itjax.errors import InputNotFound, MissingEntry, UserError, brief
from itjax.model.config import ModelConfig, from_hf_config
from itjax.model.llama import param_shapes

# (path under params['layers'], HF name under model.layers.{i}., GGUF name under blk.{i}., is a matmul weight)
LAYER_TENSORS: list[tuple[tuple[str, ...], str, str, bool]] = [
    (("attn", "q_proj", "kernel"), "self_attn.q_proj.weight", "attn_q.weight", True),
    (("attn", "k_proj", "kernel"), "self_attn.k_proj.weight", "attn_k.weight", True),
    (("attn", "v_proj", "kernel"), "self_attn.v_proj.weight", "attn_v.weight", True),
    (("attn", "o_proj", "kernel"), "self_attn.o_proj.weight", "attn_output.weight", True),
    (("mlp", "gate_proj", "kernel"), "mlp.gate_proj.weight", "ffn_gate.weight", True),
    (("mlp", "up_proj", "kernel"), "mlp.up_proj.weight", "ffn_up.weight", True),
    (("mlp", "down_proj", "kernel"), "mlp.down_proj.weight", "ffn_down.weight", True),
]
# The layer norms: Llama's two (HF calls the one before the MLP post_attention_layernorm), Gemma's four.
PRE_NORMS = [
    (("attn_norm", "scale"), "input_layernorm.weight", "attn_norm.weight", False),
    (("mlp_norm", "scale"), "post_attention_layernorm.weight", "ffn_norm.weight", False),
]
PRE_POST_NORMS = [
    (("attn_norm", "scale"), "input_layernorm.weight", "attn_norm.weight", False),
    (("post_attn_norm", "scale"), "post_attention_layernorm.weight", "post_attention_norm.weight", False),
    (("mlp_norm", "scale"), "pre_feedforward_layernorm.weight", "ffn_norm.weight", False),
    (("post_mlp_norm", "scale"), "post_feedforward_layernorm.weight", "post_ffw_norm.weight", False),
]
QK_NORM_TENSORS = [(("attn", f"{p}_norm", "scale"), f"self_attn.{p}_norm.weight", f"attn_{p}_norm.weight", False)
                   for p in ("q", "k")]
QKV_BIAS_TENSORS = [
    (("attn", p, "bias"), f"self_attn.{p}.bias", f"attn_{g}.bias", False)
    for p, g in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"))]
OUT_BIAS_TENSORS = [(("attn", "o_proj", "bias"), "self_attn.o_proj.bias", "attn_output.bias", False)]
MLP_BIAS_TENSORS = [(("mlp", p, "bias"), f"mlp.{p}.bias", f"ffn_{g}.bias", False)
                    for p, g in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down"))]
# (top-level params path, HF name, GGUF name, is a matmul weight); lm_head only when embeddings are untied.
TOP_TENSORS = [
    (("embedding",), "model.embed_tokens.weight", "token_embd.weight", False),
    (("final_norm", "scale"), "model.norm.weight", "output_norm.weight", False),
]
LM_HEAD = (("lm_head",), "lm_head.weight", "output.weight", True)


def layer_tensors(config: ModelConfig):
  norms = PRE_POST_NORMS if config.post_norms else PRE_NORMS
  return (norms + LAYER_TENSORS + QK_NORM_TENSORS * config.qk_norm + QKV_BIAS_TENSORS * config.qkv_bias
          + OUT_BIAS_TENSORS * config.out_bias + MLP_BIAS_TENSORS * config.mlp_bias)


def top_tensors(config: ModelConfig):
  return TOP_TENSORS + ([] if config.tie_embeddings else [LM_HEAD])


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def build_params(config: ModelConfig, get: Callable[[str, int | None], np.ndarray], source: str,
                 column: int = 1) -> dict:
  """Assembles the (scanned-layout) params dict; every tensor's shape is checked against the config.

  `get(name, layer)` returns a tensor in HF layout ([out, in] for weights) by its name in `column` of the tables
  (1 = HF names, 2 = GGUF names); layer is None for the top-level tensors. Layers are stacked on a leading axis.
  """
  dtype = jnp.dtype(config.param_dtype)
  expect = _expected_shapes(config)

  def fetch(entry, layer):
    path, name, is_kernel = entry[0], entry[column], entry[3]
    arr = get(name, layer)
    want = expect[path if layer is None else ("layers",) + path]
    got = tuple(arr.shape[::-1]) if is_kernel else tuple(arr.shape)
    if got != want:
      shown = name if layer is None else f"layer {layer}: {name}"
      raise UserError(f"{source}: tensor {shown!r} has shape {tuple(arr.shape)}, expected "
                      f"{want[::-1] if is_kernel else want} for this config")
    arr = arr.T if is_kernel else arr
    return np.asarray(arr).astype(dtype)

  params: dict = {}
  for entry in top_tensors(config):
    _set(params, entry[0], fetch(entry, None))
  for entry in layer_tensors(config):
    _set(params, ("layers",) + entry[0], np.stack([fetch(entry, i) for i in range(config.num_layers)]))
  return params


def _expected_shapes(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  flat = traverse_util.flatten_dict(param_shapes(config.replace(scan_layers=True)))
  out = {}
  for path, leaf in flat.items():
    shape = tuple(leaf.shape)
    out[path] = shape[1:] if path[0] == "layers" else shape  # per-layer shape; layers are stacked here
  return out


class SafetensorsDir:
  """Lazily reads tensors by HF name from `model.safetensors` or a sharded `model.safetensors.index.json`."""

  def __init__(self, path: str):
    self.path = path
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
      try:
        with open(index) as f:
          weight_map = json.load(f)["weight_map"]
        self.files = {name: os.path.join(path, fname) for name, fname in weight_map.items()}
      except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{index}: not a safetensors index (expected {{\"weight_map\": {{tensor: file}}}}; "
                        f"{type(e).__name__}: {e})") from None
    elif os.path.exists(single):
      with self._safe_open(single) as f:
        self.files = {name: single for name in f.keys()}
    else:
      pickles = [f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
      hint = f" (found {pickles}: pickle checkpoints are never loaded; convert them to safetensors)" if pickles else ""
      raise InputNotFound(f"{path}: no model.safetensors or model.safetensors.index.json{hint}")
    self._open: dict[str, object] = {}

  def get(self, name: str) -> np.ndarray:
    fname = self.files.get(name)
    if fname is None:
      raise MissingEntry(f"{self.path}: safetensors checkpoint is missing tensor {name!r}")
    if fname not in self._open:
      self._open[fname] = self._safe_open(fname)
    try:
      return self._open[fname].get_tensor(name)
    except Exception as e:  # offsets past the end, a dtype numpy lacks
      raise UserError(f"{fname}: tensor {name!r} cannot be read ({brief(e, 200)})") from None

  @staticmethod
  def _safe_open(fname: str):
    """safetensors checks the header against the file (its length, every tensor's offsets) before any read."""
    if not os.path.exists(fname):
      raise InputNotFound(f"{fname}: no such file (named by the safetensors index)")
    try:
      return safe_open(fname, framework="numpy")
    except Exception as e:  # SafetensorError and the like: a header that lies or is cut short
      raise UserError(f"{fname}: not a readable safetensors file ({brief(e, 200)})") from None


def read_hf_config(path: str) -> dict:
  if not os.path.isdir(path):
    raise InputNotFound(f"model path {path!r} does not exist or is not a directory")
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    raise InputNotFound(f"{path}: no config.json (expected a Hugging Face model directory)")
  with open(cfg_path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise UserError(f"{cfg_path}: not valid JSON ({e})") from None


def load_hf_model(path: str, dtype: str = "float32", param_dtype: str = "float32") -> tuple[ModelConfig, dict]:
  """(ModelConfig, params) from a local HF model directory."""
  config = from_hf_config(read_hf_config(path), source=os.path.join(path, "config.json"))
  config = config.replace(dtype=dtype, param_dtype=param_dtype)
  tensors = SafetensorsDir(path)

  def get(name, layer):
    return tensors.get(name if layer is None else f"model.layers.{layer}.{name}")

  return config, build_params(config, get, source=path)
