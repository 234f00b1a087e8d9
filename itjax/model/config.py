"""ModelConfig: the frozen description of a decoder of the Llama, Qwen and Gemma families, its presets, and the HF
config.json mapping. One decoder serves them all; the families' differences are fields here."""

from __future__ import annotations

import dataclasses
from typing import Any

from itjax.errors import UserError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")
GEMMA_TYPES = ("gemma2", "gemma3_text")
LAYER_TYPES = ("full_attention", "sliding_attention")
ACTIVATIONS = ("silu", "gelu_tanh")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling, as HF's `rope_scaling` / `rope_parameters` describe it."""

  kind: str = "default"  # one of SUPPORTED_ROPE_TYPES
  factor: float = 1.0
  low_freq_factor: float = 1.0  # llama3 only
  high_freq_factor: float = 4.0  # llama3 only
  original_max_position_embeddings: int = 8192  # llama3 only


# Every attention and MLP projection (regexes over param paths such as 'layers/attn/q_proj/kernel').
LORA_TARGETS_ALL = (r".*/(q|k|v|o)_proj/kernel", r".*/(gate|up|down)_proj/kernel")
REMAT_POLICIES = ("none", "full", "dots", "attention")


@dataclasses.dataclass(frozen=True)
class LoraSpec:
  """Low-rank adapters on the projections whose kernel path matches a target: y = x W + scale * (x A) B.

  A [in, R] starts random, B [R, out] at zero (so the adapted model starts as the base); scale = alpha / R, or
  alpha / sqrt(R) with rsLoRA. Dropout (on the adapter input) is active only when a 'dropout' rng is given.
  """

  rank: int
  alpha: float
  targets: tuple[str, ...] = LORA_TARGETS_ALL
  rslora: bool = False
  dropout: float = 0.0

  def __post_init__(self):
    if self.rank <= 0:
      raise UserError(f"lora.rank must be > 0, got {self.rank}")
    if not 0.0 <= self.dropout < 1.0:
      raise UserError(f"lora.dropout must be in [0, 1), got {self.dropout}")

  @property
  def scale(self) -> float:
    return self.alpha / (self.rank ** 0.5 if self.rslora else self.rank)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of one decoder: Llama 2/3.x, SmolLM2, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3 (text)."""

  vocab_size: int
  dim: int  # D, the residual width
  mlp_dim: int  # F, the SwiGLU hidden width
  num_layers: int
  num_heads: int  # N, query heads
  num_kv_heads: int  # K, key/value heads: N (MHA), 1 (MQA) or a divisor of N (GQA)
  head_dim: int  # H
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling = RopeScaling()
  max_position_embeddings: int = 4096
  tie_embeddings: bool = False
  qkv_bias: bool = False  # Qwen2, and Llama with attention_bias
  out_bias: bool = False  # Llama with attention_bias
  mlp_bias: bool = False
  # A key is seen only within the last `sliding_window` slots: in every layer (Mistral), or with layer_types only in
  # the 'sliding_attention' layers (Gemma 2 and 3, which interleave them with 'full_attention' layers).
  sliding_window: int | None = None
  layer_types: tuple[str, ...] = ()
  rope_local_theta: float | None = None  # the RoPE base of sliding layers (Gemma 3; None: rope_theta, no scaling)
  qk_norm: bool = False  # RMSNorm of each head's queries and keys before RoPE (Qwen3, Gemma 3)
  post_norms: bool = False  # RMSNorm of the attention and MLP outputs before each residual add (Gemma 2 and 3)
  norm_offset: float = 0.0  # RMSNorm multiplies by (norm_offset + scale) in float32 (Gemma: 1, scales start at 0)
  activation: str = "silu"  # of the gated MLP: silu (SwiGLU) or gelu_tanh (GeGLU, Gemma)
  embed_scale: bool = False  # embeddings times sqrt(dim), the factor rounded to the param dtype (Gemma)
  query_pre_attn_scalar: float | None = None  # queries scaled by its -1/2 power, not head_dim's (Gemma)
  attn_softcap: float | None = None  # attention scores become cap * tanh(score / cap) (Gemma 2)
  final_softcap: float | None = None  # the same on the logits (Gemma 2)
  dtype: str = "float32"  # compute dtype of activations
  param_dtype: str = "float32"
  # nn.scan over layers (params stacked on a leading [L] axis): flat compile time, the storage layout everywhere.
  # False unrolls the layers (params under layers_0..layers_{L-1}); decoding uses it, as a scanned layer's weights
  # and cache slice are copied out of the stack on every step.
  scan_layers: bool = True
  model_type: str = "llama"  # the HF model_type this config came from (kept for export)
  lora: LoraSpec | None = None  # adapters (their params appear beside the kernels they adapt)
  # Recompute activations in the backward pass: none; full (all of a layer's); dots (keep the matmul outputs);
  # attention (only the attention probabilities, [B, N, T, T] per layer, the largest activation).
  remat: str = "none"

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise UserError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise UserError(f"head_dim={self.head_dim} must be even for RoPE")
    if self.remat not in REMAT_POLICIES:
      raise UserError(f"remat policy {self.remat!r} is not one of {REMAT_POLICIES}")
    if self.rope_scaling.kind not in SUPPORTED_ROPE_TYPES:
      raise UserError(f"rope type {self.rope_scaling.kind!r} is not supported; expected one of {SUPPORTED_ROPE_TYPES}")
    if self.activation not in ACTIVATIONS:
      raise UserError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
    if self.layer_types:
      if len(self.layer_types) != self.num_layers or not set(self.layer_types) <= set(LAYER_TYPES):
        raise UserError(f"layer_types must give each of the {self.num_layers} layers one of {LAYER_TYPES}, got "
                        f"{list(self.layer_types)}")
      if "sliding_attention" in self.layer_types and not self.sliding_window:
        raise UserError("layer_types has sliding_attention layers but sliding_window is not set")

  @property
  def sliding_layers(self) -> tuple[bool, ...]:
    """Per layer, whether it sees only the last sliding_window slots."""
    if self.layer_types:
      return tuple(t == "sliding_attention" for t in self.layer_types)
    return (self.sliding_window is not None,) * self.num_layers

  @property
  def mixed_layers(self) -> bool:
    """Sliding and full layers in one model: each layer picks its mask and RoPE base."""
    return len(set(self.sliding_layers)) > 1

  def replace(self, **changes) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_dict(cls, fields: dict[str, Any]) -> ModelConfig:
    """The config that dataclasses.asdict gave as `fields` (JSON lists back to tuples), without its LoRA."""
    known = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in fields.items() if k in known and k != "lora"}
    return cls(**{**fields, "rope_scaling": RopeScaling(**fields.get("rope_scaling", {})),
                  "layer_types": tuple(fields.get("layer_types") or ())})

  @property
  def num_params(self) -> int:
    """Parameter count (embeddings included, counted once when tied)."""
    d, f, n, k, h = self.dim, self.mlp_dim, self.num_heads, self.num_kv_heads, self.head_dim
    attn = d * n * h * 2 + d * k * h * 2 + (n * h + 2 * k * h) * self.qkv_bias + d * self.out_bias
    attn += 2 * h * self.qk_norm
    mlp = 3 * d * f + (2 * f + d) * self.mlp_bias
    layer = attn + mlp + 2 * d * (1 + self.post_norms)
    head = 0 if self.tie_embeddings else d * self.vocab_size
    return self.vocab_size * d + self.num_layers * layer + d + head


def _get(hf: dict[str, Any], key: str, default: Any = None, required: bool = True) -> Any:
  if key in hf and hf[key] is not None:
    return hf[key]
  if required and default is None:
    raise UserError(f"config.json: missing required key {key!r}")
  return default


def _positive_int(hf: dict[str, Any], key: str, default: Any = None, required: bool = True) -> int:
  value = _get(hf, key, default, required)
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise UserError(f"config.json: {key} must be a positive integer, got {value!r}")
  return value


def _positive_float(hf: dict[str, Any], key: str, default: float) -> float:
  value = _get(hf, key, default, required=False)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
    raise UserError(f"config.json: {key} must be a positive number, got {value!r}")
  return float(value)


def _rope_params(hf: dict[str, Any], layer_type: str | None = None) -> dict[str, Any]:
  """RoPE settings as one dict: transformers 5 writes `rope_parameters` (with rope_theta inside; per layer type for
  Gemma 3), older files `rope_theta` + `rope_scaling`."""
  params = dict(hf.get("rope_parameters") or {})
  if layer_type is not None and isinstance(params.get(layer_type), dict):
    params = dict(params[layer_type])
  elif any(isinstance(v, dict) for v in params.values()):
    params = dict(params.get("full_attention") or {})
  scaling = dict(hf.get("rope_scaling") or {})
  params.update({k: v for k, v in scaling.items() if v is not None})
  params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
  return params


def _rope_from_hf(hf: dict[str, Any], layer_type: str | None = None) -> tuple[float, RopeScaling]:
  params = _rope_params(hf, layer_type)
  kind = params.get("rope_type", params.get("type", "default"))
  if kind not in SUPPORTED_ROPE_TYPES:
    raise UserError(f"config.json: rope type {kind!r} is not supported; expected one of {SUPPORTED_ROPE_TYPES}")
  rope = RopeScaling(
      kind=kind,
      factor=float(params.get("factor", 1.0)),
      low_freq_factor=float(params.get("low_freq_factor", 1.0)),
      high_freq_factor=float(params.get("high_freq_factor", 4.0)),
      original_max_position_embeddings=int(params.get("original_max_position_embeddings", 8192)),
  )
  return float(params["rope_theta"]), rope


def _layer_types(hf: dict[str, Any], model_type: str, num_layers: int, source: str) -> tuple[str, ...]:
  """Gemma's per-layer attention kinds: `layer_types`, else the pattern older files give (Gemma 2 alternates,
  starting with a sliding layer; Gemma 3 has every sliding_window_pattern-th layer full)."""
  given = hf.get("layer_types")
  if given:
    if len(given) != num_layers or not set(given) <= set(LAYER_TYPES):
      raise UserError(f"{source}: layer_types must give each of the {num_layers} layers one of {LAYER_TYPES}")
    return tuple(given)
  pattern = 2 if model_type == "gemma2" else hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6))
  if isinstance(pattern, bool) or not isinstance(pattern, int) or pattern < 1:
    raise UserError(f"{source}: sliding_window_pattern must be a positive integer, got {pattern!r}")
  return tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(num_layers))


def _family(hf: dict[str, Any], model_type: str, num_layers: int, source: str) -> dict[str, Any]:
  """The fields in which Qwen3 and Gemma differ from Llama."""
  if model_type == "qwen3":
    if hf.get("use_sliding_window"):
      raise UserError(f"{source}: Qwen3 with use_sliding_window=true is not supported")
    return {"qk_norm": True}
  if model_type not in GEMMA_TYPES:
    return {}
  act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
  if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
    raise UserError(f"{source}: hidden_activation={act!r} is not supported; expected 'gelu_pytorch_tanh'")
  layer_types = _layer_types(hf, model_type, num_layers, source)
  window = hf.get("sliding_window")
  if "sliding_attention" in layer_types:
    window = _positive_int(hf, "sliding_window")
  softcaps = {key: float(hf[name]) if hf.get(name) is not None else None
              for key, name in (("attn_softcap", "attn_logit_softcapping"),
                                ("final_softcap", "final_logit_softcapping"))}
  local_theta = None  # Gemma 2: one RoPE base for every layer
  if model_type == "gemma3_text":
    local = (hf.get("rope_parameters") or {}).get("sliding_attention")
    local_theta = float(local["rope_theta"] if isinstance(local, dict) else hf.get("rope_local_base_freq", 10000.0))
  return {"qk_norm": model_type == "gemma3_text", "post_norms": True, "norm_offset": 1.0, "activation": "gelu_tanh",
          "embed_scale": True, "query_pre_attn_scalar": _positive_float(hf, "query_pre_attn_scalar", 256.0),
          "layer_types": layer_types, "sliding_window": window, "rope_local_theta": local_theta, **softcaps}


def from_hf_config(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
  """Maps a HF `config.json` dict to a ModelConfig; unsupported architectures raise naming what is supported."""
  model_type = hf.get("model_type")
  if model_type == "gemma3" and isinstance(hf.get("text_config"), dict):
    raise UserError(f"{source}: a Gemma 3 image-text model (model_type 'gemma3'); itjax reads the text-only "
                    "checkpoints (model_type 'gemma3_text', as Gemma 3 270M and 1B are)")
  if model_type not in SUPPORTED_MODEL_TYPES:
    archs = hf.get("architectures")
    raise UserError(
        f"{source}: unsupported architecture model_type={model_type!r} (architectures={archs}); "
        f"itjax supports model_type in {SUPPORTED_MODEL_TYPES}")
  if model_type == "qwen2" and hf.get("use_sliding_window"):
    raise UserError(f"{source}: Qwen2 with use_sliding_window=true is not supported")
  if model_type not in GEMMA_TYPES:
    act = hf.get("hidden_act", "silu")
    if act != "silu":
      raise UserError(f"{source}: hidden_act={act!r} is not supported; expected 'silu'")
  dim = _positive_int(hf, "hidden_size")
  num_heads = _positive_int(hf, "num_attention_heads")
  num_layers = _positive_int(hf, "num_hidden_layers")
  theta, rope = _rope_from_hf(hf, "full_attention" if model_type == "gemma3_text" else None)
  attention_bias = bool(hf.get("attention_bias", False))
  fields = dict(
      vocab_size=_positive_int(hf, "vocab_size"),
      dim=dim,
      mlp_dim=_positive_int(hf, "intermediate_size"),
      num_layers=num_layers,
      num_heads=num_heads,
      num_kv_heads=_positive_int(hf, "num_key_value_heads", num_heads, required=False),
      head_dim=_positive_int(hf, "head_dim", dim // num_heads, required=False),
      rms_norm_eps=_positive_float(hf, "rms_norm_eps", 1e-6),
      rope_theta=theta,
      rope_scaling=rope,
      max_position_embeddings=_positive_int(hf, "max_position_embeddings", 4096, required=False),
      tie_embeddings=bool(hf.get("tie_word_embeddings", model_type in GEMMA_TYPES)),
      qkv_bias=True if model_type == "qwen2" else attention_bias,
      out_bias=attention_bias if model_type in ("llama", "qwen3") + GEMMA_TYPES else False,
      mlp_bias=bool(hf.get("mlp_bias", False)),
      sliding_window=hf.get("sliding_window") if model_type == "mistral" else None,
      model_type=model_type,
  )
  return ModelConfig(**{**fields, **_family(hf, model_type, num_layers, source)})


# Named presets. `tiny` is the random test model; the others describe real checkpoints' shapes.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=256, dim=64, mlp_dim=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                        max_position_embeddings=512),
    "smollm2-135m": ModelConfig(vocab_size=49152, dim=576, mlp_dim=1536, num_layers=30, num_heads=9, num_kv_heads=3,
                                head_dim=64, rope_theta=100000.0, max_position_embeddings=8192, tie_embeddings=True),
    "llama-3.2-1b": ModelConfig(vocab_size=128256, dim=2048, mlp_dim=8192, num_layers=16, num_heads=32, num_kv_heads=8,
                                head_dim=64, rope_theta=500000.0, max_position_embeddings=131072, tie_embeddings=True,
                                rope_scaling=RopeScaling("llama3", 32.0, 1.0, 4.0, 8192)),
    "gemma3-270m": ModelConfig(vocab_size=262144, dim=640, mlp_dim=2048, num_layers=18, num_heads=4, num_kv_heads=1,
                               head_dim=256, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=32768,
                               tie_embeddings=True, sliding_window=512, rope_local_theta=10000.0, qk_norm=True,
                               post_norms=True, norm_offset=1.0, activation="gelu_tanh", embed_scale=True,
                               query_pre_attn_scalar=256.0, model_type="gemma3_text",
                               layer_types=tuple("full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                                 for i in range(18))),
    "qwen3-0.6b": ModelConfig(vocab_size=151936, dim=1024, mlp_dim=3072, num_layers=28, num_heads=16, num_kv_heads=8,
                              head_dim=128, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=40960,
                              tie_embeddings=True, qk_norm=True, model_type="qwen3"),
    "llama-3.1-8b": ModelConfig(vocab_size=128256, dim=4096, mlp_dim=14336, num_layers=32, num_heads=32, num_kv_heads=8,
                                head_dim=128, rope_theta=500000.0, max_position_embeddings=131072,
                                rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)),
}
