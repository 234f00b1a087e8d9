"""Sharded training on 8 simulated CPU devices equals training on one device, and holds 1/8 per device."""

import os
import subprocess
import sys

import pytest

from itjax.training import sharding
from itjax.model.config import LoraSpec, PRESETS
from itjax.model.llama import param_axes
from itjax.model.lora import flatten

SCRIPT = r"""
import sys
import jax
import numpy as np
sys.path.insert(0, sys.argv[2])
from test_train import load_config, run_steps
from itjax.training.setup import setup
from itjax.model.lora import flatten

assert len(jax.devices()) == 8
results = {}
for mesh in [(1, 1, 1), (2, 4, 1), (2, 2, 2)]:  # data and fsdp; data, fsdp and tensor
  config = load_config(model=sys.argv[1], mesh=mesh, max_len=256, batch_size=8, **{"data.on_error": "skip"})
  devices = jax.devices()[:1] if mesh == (1, 1, 1) else None
  run = setup(config, sys.argv[3], devices=devices)
  losses = run_steps(run, 3)
  params = {k: np.asarray(jax.device_get(v)) for k, v in flatten(run.state["params"]).items()}
  if mesh == (2, 2, 2):
    spec = flatten(run.frozen)["layers/attn/q_proj/kernel"].sharding.spec
    assert tuple(spec) == (None, "fsdp", "tensor"), spec
    # The rules table constrains activations inside the step: hidden states, MLP, query heads, logits.
    hlo = run.train_step.lower(run.state, run.frozen, run.next_batch()).as_text()
    for layout in ('[{"data", "fsdp"}, {}, {}]', '[{"data", "fsdp"}, {}, {"tensor"}]',
                   '[{"data", "fsdp"}, {}, {"tensor"}, {}]'):
      assert "sdy.sharding_constraint" in hlo and f"<@mesh, {layout}>" in hlo, layout
  results[mesh] = (losses, params)
base_losses, base_params = results.pop((1, 1, 1))
for mesh, (losses, params) in results.items():
  np.testing.assert_allclose(losses, base_losses, atol=1e-5, rtol=0, err_msg=str(mesh))
  for k, v in params.items():
    np.testing.assert_allclose(v, base_params[k], atol=1e-5, rtol=0, err_msg=f"{mesh} {k}")
  print(mesh, "losses", losses)

# Full fine-tuning, fsdp 8: each device holds 1/8 of every split param and of its two AdamW moments.
config = load_config(model=sys.argv[1], method="full", mesh=(1, 8, 1), max_len=256, batch_size=8,
                     **{"data.on_error": "skip"})
run = setup(config, sys.argv[3] + "/full")
run_steps(run, 1)
params = flatten(run.state["params"])
moments = {}
for path, leaf in jax.tree_util.tree_leaves_with_path(run.state["opt_state"]):
  names = [getattr(k, "name", None) for k in path]
  if "mu" in names or "nu" in names:
    moment = "mu" if "mu" in names else "nu"
    moments[(moment, "/".join(str(k.key) for k in path if hasattr(k, "key")))] = leaf
assert len(moments) == 2 * len(params), (len(moments), len(params))
split = 0
for (moment, key), leaf in moments.items():
  param = params[key]
  assert leaf.sharding.spec == param.sharding.spec, (moment, key, leaf.sharding.spec, param.sharding.spec)
  for array in (param, leaf):
    per_device = {s.device: s.data.nbytes for s in array.addressable_shards}
    if "fsdp" in jax.tree.leaves(tuple(param.sharding.spec)):
      assert set(per_device.values()) == {array.nbytes // 8}, (moment, key, per_device, array.nbytes)
      split += 1
    else:
      assert set(per_device.values()) == {array.nbytes}, (moment, key, per_device)
assert split >= len(params), split  # the kernels and embeddings are split, norm scales are not
print("fsdp 8 split", split, "arrays of", 3 * len(params))
print("OK")
"""


@pytest.mark.slow
def test_meshes_match_one_device(tiny_hf_dir, tmp_path):
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
  here = os.path.dirname(os.path.abspath(__file__))
  result = subprocess.run([sys.executable, "-c", SCRIPT, tiny_hf_dir, here, str(tmp_path)], capture_output=True,
                          text=True, timeout=900, env=env)
  assert result.returncode == 0, result.stderr[-4000:]
  assert result.stdout.strip().endswith("OK")


def test_every_param_has_a_rule_and_divides_the_mesh():
  config = PRESETS["smollm2-135m"].replace(lora=LoraSpec(8, 16.0))
  for path, axes in flatten(param_axes(config)).items():
    sharding.spec(tuple(axes), where=path)  # raises for a logical axis without a rule
  with pytest.raises(ValueError, match="layers/x: logical axis 'nope' has no rule"):
    sharding.spec(("layers", "nope"), where="layers/x")
  with pytest.raises(ValueError, match=r"w: dimension 1 \(mlp, 6\) is not divisible by mesh axes \('tensor',\)"):
    sharding.spec(("embed", "mlp"), {"data": 1, "fsdp": 1, "tensor": 4}, (8, 6), "w")
  assert sharding.mesh_shape((2, -1, 1), 8) == (2, 4, 1)
  with pytest.raises(ValueError, match="does not divide the 8 devices"):
    sharding.mesh_shape((3, -1, 1), 8)


def test_a_batch_that_does_not_split_over_hosts_microbatches_or_the_mesh_stops_with_the_numbers():
  from itjax.errors import UserError
  from itjax.training.prepare import check_batch_split
  from test_train import load_config
  check_batch_split(load_config(batch_size=8, microbatches=2, mesh=(2, 2, 2)), 8, 2)  # 2 hosts x 2 x 2 rows
  with pytest.raises(UserError, match=r"config.batch_size 4 / config.microbatches 1 = 4 rows per microbatch do not "
                                      r"split over the mesh's data x fsdp = 1 x 8 devices; make them a multiple of 8"):
    check_batch_split(load_config(batch_size=4, mesh=(1, -1, 1)), 8, 1)
  with pytest.raises(UserError, match=r"config.batch_size 6 does not split over 4 hosts x 1 microbatches; make it a "
                                      r"multiple of 4"):
    check_batch_split(load_config(batch_size=6, mesh=(1, -1, 1)), 4, 4)
  with pytest.raises(UserError, match=r"config.mesh: mesh \(3, -1, 1\) does not divide the 8 devices"):
    check_batch_split(load_config(mesh=(3, -1, 1)), 8, 1)
