"""Large-model configs are checked without devices: shapes, shardings and memory per device."""

import pytest

from itjax.training.config import validate
from itjax.model.config import PRESETS
from itjax.training.plan import plan
from test_train import load_config


@pytest.mark.parametrize("arg,devices,memory_gb", [("gpu", 1, 80), ("tpu", 16, 16)])
def test_llama31_8b_configs_fit(arg, devices, memory_gb):
  config = load_config("llama31_8b_lora.py", arg, model="demo")
  validate(config)
  estimate = plan(config, PRESETS["llama-3.1-8b"], devices)
  assert estimate["params"] > 8e9 and 0 < estimate["trainable"] < 0.01 * estimate["params"]
  assert estimate["total_gb"] < 0.9 * memory_gb, estimate
  assert estimate["frozen_gb"] == pytest.approx(estimate["params"] * 2 / devices / 1024 ** 3, rel=0.02)


def test_plan_rejects_a_mesh_the_params_do_not_divide():
  config = load_config("llama31_8b_lora.py", "tpu", model="demo", mesh=(1, 1, 3))
  with pytest.raises(ValueError, match="not divisible by mesh axes"):
    plan(config, PRESETS["llama-3.1-8b"], 3)


@pytest.mark.parametrize("preset,params", [("gemma3-270m", 268_098_176), ("qwen3-0.6b", 596_049_920)])
def test_the_new_families_plan_with_their_norms_counted_and_sharded(preset, params):
  """Gemma 3 and Qwen3: every param (q/k norms, post-norms) placed on the mesh, the count the published models have
  (Gemma 3 270M and Qwen3-0.6B with tied embeddings), LoRA on the projections only."""
  from itjax.model import lora as lora_lib
  from itjax.model.llama import param_shapes
  model = PRESETS[preset]
  assert model.num_params == params
  assert sum(s.size for s in lora_lib.flatten(param_shapes(model)).values()) == params
  config = load_config("llama31_8b_lora.py", "tpu", model="demo")
  estimate = plan(config, model, 16)
  assert estimate["params"] > params and 0 < estimate["trainable"] < 0.02 * params
