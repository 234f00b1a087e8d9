"""Out of a training workdir: a merged Hugging Face model directory, or the LoRA adapter in PEFT's format; and a PEFT
adapter in, as the starting point of a run.

Names and layouts come from the tensor table in itjax/interop/hf.py. PEFT stores lora_A.weight [R, in] and
lora_B.weight [out, R] under `base_model.model.<module>` and scales by lora_alpha / R (or / sqrt(R) with
use_rslora), as itjax does, so the adapter's numbers carry over transposed and unscaled. Every export is written
into a temporary directory beside OUT and renamed into place; an existing OUT is replaced only with overwrite.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable

import numpy as np

from itjax.errors import InputNotFound, UserError
from itjax.io import outputs
from itjax.interop.hf import LAYER_TENSORS, layer_tensors, top_tensors
from itjax.model.config import LoraSpec, ModelConfig

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
SHARD_BYTES = 2 * 1024 ** 3  # a safetensors file holds at most this much before the checkpoint is sharded
PEFT_PREFIX = "base_model.model."
# itjax module path under layers/ -> the HF module under model.layers.{i}.
MODULES = {"/".join(path[:2]): name[:-len(".weight")] for path, name, _, is_kernel in LAYER_TENSORS if is_kernel}
HF_MODULES = {v: k for k, v in MODULES.items()}


def check_out(workdir: str, out: str, overwrite: bool) -> None:
  """OUT may be written: a directory, replaced only with overwrite, never the workdir nor a directory that holds it
  (checked before anything is read)."""
  outputs.check(out, "--out", reads=[("--workdir", workdir)], overwrite=overwrite, directory=True)


def _rope_dict(config: ModelConfig) -> dict:
  rope = {"rope_type": config.rope_scaling.kind, "rope_theta": config.rope_theta}
  if config.rope_scaling.kind == "linear":
    rope["factor"] = config.rope_scaling.factor
  elif config.rope_scaling.kind == "llama3":
    r = config.rope_scaling
    rope.update(factor=r.factor, low_freq_factor=r.low_freq_factor, high_freq_factor=r.high_freq_factor,
                original_max_position_embeddings=r.original_max_position_embeddings)
  if config.model_type == "gemma3_text":  # per layer type; the sliding layers' without scaling
    return {"full_attention": rope, "sliding_attention": {"rope_type": "default",
                                                          "rope_theta": config.rope_local_theta or config.rope_theta}}
  return rope


def hf_config_dict(config: ModelConfig, tokenizer, dtype: str) -> dict:
  out = {"architectures": [ARCHITECTURES[config.model_type]], "model_type": config.model_type,
         "vocab_size": config.vocab_size, "hidden_size": config.dim, "intermediate_size": config.mlp_dim,
         "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
         "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim, "hidden_act": "silu",
         "rms_norm_eps": config.rms_norm_eps, "max_position_embeddings": config.max_position_embeddings,
         "tie_word_embeddings": config.tie_embeddings, "rope_parameters": _rope_dict(config), "dtype": dtype,
         "bos_token_id": tokenizer.bos_id, "eos_token_id": list(tokenizer.eos_ids)[0] if tokenizer.eos_ids else None,
         "pad_token_id": tokenizer.pad_id}
  if config.model_type in ("llama", "qwen3", "gemma2", "gemma3_text"):
    if config.qkv_bias != config.out_bias:
      raise UserError(f"{config.model_type}'s attention_bias covers q, k, v and o alike; this model has them differ")
    out["attention_bias"] = config.qkv_bias
  if config.model_type == "llama":
    out["mlp_bias"] = config.mlp_bias
  if config.model_type == "mistral":
    out["sliding_window"] = config.sliding_window
  if config.model_type in ("gemma2", "gemma3_text"):
    del out["hidden_act"]
    scalar = config.query_pre_attn_scalar  # transformers wants an int where it is one
    out.update(hidden_activation="gelu_pytorch_tanh",
               query_pre_attn_scalar=int(scalar) if scalar == int(scalar) else scalar,
               sliding_window=config.sliding_window, layer_types=list(config.layer_types),
               attn_logit_softcapping=config.attn_softcap, final_logit_softcapping=config.final_softcap)
  return out


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One tensor of an export: its shape now, its values when written (so that one tensor exists at a time)."""
  shape: tuple[int, ...]
  read: Callable[[], np.ndarray]


def hf_tensors(config: ModelConfig, params: dict) -> dict[str, Tensor]:
  """HF-named tensors ([out, in] weights) from scanned-layout params. With config.lora, an adapted kernel is merged
  when it is read, one layer at a time (W + scale * A @ B in float64, rounded once): no merged copy of the model."""
  from itjax.model.lora import merged_kernel

  def at(tree, path):
    for key in path:
      tree = tree[key]
    return tree

  out = {}
  for path, name, _, is_kernel in top_tensors(config):
    value = at(params, path)
    out[name] = Tensor(tuple(reversed(value.shape)) if is_kernel else tuple(value.shape),
                       lambda v=value, t=is_kernel: np.asarray(v).T if t else np.asarray(v))
  for path, name, _, is_kernel in layer_tensors(config):
    stacked = at(params["layers"], path)
    module = at(params["layers"], path[:-1])
    adapted = is_kernel and config.lora is not None and "lora_a" in module
    for i in range(config.num_layers):
      shape = tuple(stacked.shape[1:])
      if adapted:
        read = (lambda i=i, m=module: merged_kernel(m["kernel"][i], m["lora_a"][i], m["lora_b"][i],
                                                    config.lora.scale).T)
      else:
        read = lambda i=i, v=stacked, t=is_kernel: np.asarray(v[i]).T if t else np.asarray(v[i])
      out[f"model.layers.{i}.{name}"] = Tensor(shape[::-1] if is_kernel else shape, read)
  return out


SAFETENSORS_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def _numpy_dtype(dtype: str) -> np.dtype:
  import ml_dtypes
  return np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)


def write_safetensors(path: str, tensors: dict[str, Tensor], dtype: str, metadata: dict | None = None) -> None:
  """A .safetensors file written one tensor at a time: the header from the shapes, then each tensor's bytes as it
  is read and cast (little-endian, as the format is)."""
  np_dtype = _numpy_dtype(dtype)
  header, offset = {}, 0
  for name, t in tensors.items():
    nbytes = int(np.prod(t.shape, dtype=np.int64)) * np_dtype.itemsize
    header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(t.shape),
                    "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  if metadata:
    header["__metadata__"] = metadata
  text = json.dumps(header, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
  with open(path, "wb") as f:
    f.write(len(text).to_bytes(8, "little"))
    f.write(text)
    for name, t in tensors.items():
      value = np.ascontiguousarray(np.asarray(t.read(), np.float32).astype(np_dtype, copy=False))
      if value.shape != t.shape:
        raise RuntimeError(f"{name}: read {value.shape}, announced {t.shape}")
      f.write(value.view(np.uint8).data if value.ndim else value.tobytes())


def save_safetensors(tensors: dict[str, Tensor], directory: str, dtype: str,
                     shard_bytes: int = SHARD_BYTES) -> list[str]:
  """model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json above shard_bytes; each
  tensor is read, cast and written on its own, so an export holds one tensor beside the params."""
  itemsize = _numpy_dtype(dtype).itemsize
  sizes = {name: int(np.prod(t.shape, dtype=np.int64)) * itemsize for name, t in tensors.items()}
  shards, current, size = [], [], 0  # names per shard, by their size in `dtype`
  for name in tensors:
    if current and size + sizes[name] > shard_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(name)
    size += sizes[name]
  shards.append(current)
  names = (["model.safetensors"] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  for fname, shard in zip(names, shards):
    write_safetensors(os.path.join(directory, fname), {k: tensors[k] for k in shard}, dtype, {"format": "pt"})
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(sizes.values())},
             "weight_map": {k: fname for fname, shard in zip(names, shards) for k in shard}}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
      json.dump(index, f, indent=2)
  return names


def export_hf(workdir: str, out: str, step: int | None = None, dtype: str = "float32", overwrite: bool = False,
              shard_bytes: int = SHARD_BYTES) -> str:
  """Base + merged LoRA (or the fine-tuned params) as a HF model directory with tokenizer and chat template. The
  merge happens as each layer's tensor is written, so the export needs little memory beyond the base's params."""
  from itjax.model import lora
  from itjax.interop.checkpoint import lora_spec
  from itjax.interop.loading import load_trained
  from itjax.data.tokenizer import HFTokenizer
  check_out(workdir, out, overwrite)
  base, trained, meta = load_trained(workdir, step)
  tok = base.tokenizer
  if not isinstance(tok, HFTokenizer):
    raise UserError(f"{workdir}: the base's tokenizer is not a Hugging Face tokenizer and cannot be exported")
  config = base.config.replace(lora=lora_spec(meta))
  params = lora.join(trained, base.params)
  with outputs.replace_dir(out) as tmp:
    save_safetensors(hf_tensors(config, params), tmp, dtype, shard_bytes)
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf_config_dict(config.replace(lora=None), tok, dtype), f, indent=2)
    generation = {"bos_token_id": tok.bos_id, "eos_token_id": list(tok.eos_ids), "pad_token_id": tok.pad_id}
    with open(os.path.join(tmp, "generation_config.json"), "w") as f:
      json.dump(generation, f, indent=2)
    tok.tok.save_pretrained(tmp)
  return os.path.abspath(out)


def export_peft(workdir: str, out: str, step: int | None = None, overwrite: bool = False) -> str:
  """The run's LoRA adapter as adapter_model.safetensors + adapter_config.json, loadable by peft.PeftModel."""
  from safetensors.numpy import save_file

  from itjax.model import lora
  from itjax.interop.checkpoint import lora_spec, read_trained
  check_out(workdir, out, overwrite)
  trained, meta = read_trained(workdir, step)
  spec = lora_spec(meta)
  if spec is None:
    raise UserError(f"{workdir}: a full fine-tuning run has no LoRA adapter to export; use --format hf")
  flat = {k: np.asarray(v, np.float32) for k, v in lora.flatten(trained).items()}
  others = sorted(k for k in flat if not k.endswith(("/lora_a", "/lora_b")))
  if others:
    raise UserError(f"{workdir}: the run also trained {others[:3]}; a LoRA adapter cannot carry them, use "
                    "--format hf")
  tensors, modules = {}, set()
  for path in sorted(k for k in flat if k.endswith("/lora_a")):
    module = path.split("/")[1:-1]  # layers/attn/q_proj/lora_a -> attn/q_proj
    hf_module = MODULES["/".join(module)]
    modules.add(module[-1])
    a, b = flat[path], flat[path[:-1] + "b"]  # [L, in, R], [L, R, out]
    for i in range(a.shape[0]):
      prefix = f"{PEFT_PREFIX}model.layers.{i}.{hf_module}"
      tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].T)
      tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[i].T)
  adapter = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": spec.rank, "lora_alpha": spec.alpha,
             "use_rslora": spec.rslora, "lora_dropout": spec.dropout, "target_modules": sorted(modules),
             "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
             "base_model_name_or_path": meta["base"]["path"], "modules_to_save": None}
  with outputs.replace_dir(out) as tmp:
    save_file(tensors, os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
      json.dump(adapter, f, indent=2)
  return os.path.abspath(out)


def read_peft_adapter(path: str, config: ModelConfig) -> tuple[LoraSpec, dict]:
  """(LoRA spec, adapter params in itjax's layout) from a PEFT LoRA directory; shapes are checked against config."""
  from safetensors.numpy import load_file

  from itjax.model import lora
  from itjax.model.llama import param_shapes
  cfg_path = os.path.join(path, "adapter_config.json")
  weights = os.path.join(path, "adapter_model.safetensors")
  for p in (cfg_path, weights):
    if not os.path.exists(p):
      raise InputNotFound(f"{path}: no {os.path.basename(p)} (expected a PEFT LoRA adapter directory)")
  with open(cfg_path) as f:
    adapter = json.load(f)
  if adapter.get("peft_type") != "LORA":
    raise UserError(f"{cfg_path}: peft_type {adapter.get('peft_type')!r} is not LORA")
  targets = adapter.get("target_modules") or []
  if isinstance(targets, str):
    raise UserError(f"{cfg_path}: target_modules as a regex is not supported; list the module names")
  known = {m.split("/")[1] for m in MODULES}
  unknown = sorted(set(targets) - known)
  if unknown:
    raise UserError(f"{cfg_path}: target_modules {unknown} are not projections itjax adapts ({sorted(known)})")
  rank, alpha, rslora = int(adapter["r"]), float(adapter["lora_alpha"]), bool(adapter.get("use_rslora", False))
  rank_pattern, alpha_pattern = adapter.get("rank_pattern") or {}, adapter.get("alpha_pattern") or {}
  for key, value in (("rank_pattern", rank_pattern), ("alpha_pattern", alpha_pattern)):
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in value.values()):
      raise UserError(f"{cfg_path}: {key} must map module names to positive numbers, got {value!r:.100}")

  def own(module_name: str) -> tuple[int, float]:
    """(rank, scale) of one adapted module, as PEFT gives it: a pattern key that is the name or ends it."""
    def lookup(patterns, default):
      for k, v in patterns.items():
        if k == module_name or re.fullmatch(rf"(?:.*\.)?(?:{k})", module_name):
          return v
      return default
    r, a = int(lookup(rank_pattern, rank)), float(lookup(alpha_pattern, alpha))
    return r, a / (r ** 0.5 if rslora else r)

  tensors = load_file(weights)
  pattern = re.compile(r"(?:base_model\.model\.)?(model\.layers\.(\d+)\.(.+))\.lora_([AB])(?:\.default)?\.weight")
  # Modules may differ in rank and scale (rank_pattern, alpha_pattern); itjax has one of each, so every adapter is
  # padded with zeros to the largest rank and its scale is folded into lora_b: the same function, exactly.
  matches = {name: pattern.fullmatch(name) for name in tensors}
  top = max([rank] + [own(m.group(1))[0] for m in matches.values() if m is not None])
  spec = LoraSpec(top, alpha, (rf".*/({'|'.join(sorted(targets))})/kernel",), rslora,
                  float(adapter.get("lora_dropout", 0.0)))
  scale = alpha / (top ** 0.5 if rslora else top)
  shapes = lora.flatten(param_shapes(config.replace(lora=spec, scan_layers=True)))
  out: dict[str, np.ndarray] = {}
  filled: dict[str, set[int]] = {}
  for name, value in tensors.items():
    m = matches[name]
    if m is None:
      raise UserError(f"{weights}: tensor {name!r} is not a LoRA weight of a decoder layer")
    layer, hf_module, which = int(m.group(2)), m.group(3), m.group(4)
    module = HF_MODULES.get(hf_module)
    if module is None:
      raise UserError(f"{weights}: tensor {name!r} adapts {hf_module!r}, which itjax does not adapt")
    key = f"layers/{module}/lora_{which.lower()}"
    if key not in shapes:
      raise UserError(f"{weights}: tensor {name!r} has no place in this model")
    want = shapes[key].shape  # [L, in, R] or [L, R, out]
    r, own_scale = own(m.group(1))
    expected = (want[1], r) if which == "A" else (r, want[2])
    if layer >= want[0] or value.T.shape != expected:
      raise UserError(f"{weights}: tensor {name!r} has shape {tuple(value.shape)}, expected {expected[::-1]} for "
                      f"layer < {want[0]} of this base model (rank {r})")
    slot = out.setdefault(key, np.zeros(want, np.float32))[layer]
    if which == "A":
      slot[:, :r] = value.T
    else:
      slot[:r, :] = value.T * (own_scale / scale)
    filled.setdefault(key, set()).add(layer)
  missing = sorted(k for k in shapes if k.endswith(("/lora_a", "/lora_b"))
                   and len(filled.get(k, ())) != shapes[k].shape[0])
  if missing:
    raise UserError(f"{weights}: tensors missing for {missing[:3]} (every layer of every target is expected)")
  return spec, lora.unflatten(out)
