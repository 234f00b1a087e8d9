"""The KL-to-base anchor (config.anchor): its value and gradient against numpy, weight 0 as the plain step, a large
weight holding the model at its base, what on='replay' weighs, and its config errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itjax.data import packing
from itjax.data.pipeline import Pipeline, Source
from itjax.model import lora as lora_lib
from itjax.model.config import LoraSpec, PRESETS
from itjax.model.llama import Transformer, param_shapes
from itjax.training import optim, sharding
from itjax.training.config import validate
from itjax.training.loop import Trainer
from itjax.training.setup import setup
from itjax.training.step import anchored_cross_entropy, make_anchored_loss, make_train_step

from conftest import itjax_in_process
from test_train import ROOT, host, load_config, run_steps


def random_params(config, spread: float = 0.0, seed: int = 0) -> dict:
  """Params of `config` drawn in numpy (no compiling): normal kernels, a head large enough for peaked predictions,
  norms at one, LoRA's A drawn and its B drawn with std `spread` (0: zero, as training starts)."""
  rng = np.random.default_rng(seed)
  std = {"lm_head": 0.4, "lora_a": 0.1, "lora_b": spread}
  draw = lambda leaf, shape: (np.ones(shape) if leaf == "scale" else std.get(leaf, 0.02) * rng.standard_normal(shape))
  return lora_lib.unflatten({path: draw(path.rsplit("/", 1)[-1], s.shape).astype(np.float32)
                             for path, s in sorted(lora_lib.flatten(param_shapes(config)).items())})


def tiny(method: str):
  """(model config, trainable, frozen, base) of the tiny preset with the tuned model away from its base: LoRA's B
  drawn instead of zero (base {}: the frozen params with the adapters off), or every param moved (base: the params
  before)."""
  config = PRESETS["tiny"].replace(lora=LoraSpec(4, 8.0) if method == "lora" else None)
  spread = 0.01 if method == "lora" else 0.15  # a KL to the base of 0.2 to 0.3 nats a token
  params = random_params(config, spread)
  if method == "lora":
    trainable, frozen = lora_lib.split(params, lora_lib.LORA_ONLY)
    return config, trainable, frozen, {}
  rng = np.random.default_rng(1)
  moved = jax.tree.map(lambda x: x + spread * np.abs(x).mean() * rng.standard_normal(x.shape).astype(np.float32),
                       params)
  return config, moved, {}, params


def batch(b: int = 2, t: int = 16, seed: int = 0) -> dict:
  """Rows of random tokens, row 0 packed with two examples; about half the positions trained, and 40% of those
  marked as replay tokens."""
  rng = np.random.default_rng(seed)
  segments = np.ones((b, t), np.int32)
  segments[0, t // 2:] = 2
  positions = np.tile(np.arange(t, dtype=np.int32), (b, 1))
  positions[0, t // 2:] -= t // 2
  weights = (rng.random((b, t)) < 0.5).astype(np.float32)
  return {"inputs": rng.integers(0, 256, (b, t)).astype(np.int32), "targets": rng.integers(0, 256, (b, t)).astype(
      np.int32), "weights": weights, "segment_ids": segments, "positions": positions,
      "anchor": weights * (rng.random((b, t)) < 0.4)}


def log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("method,on", [("lora", "targets"), ("full", "replay")])
def test_value_and_gradient_equal_numpy_on_the_two_models_logits(method, on):
  """The objective CE + scale * KL(base || tuned) of the training loss against numpy (float64) on the logits of the
  tiny model with its adapters on and off (or with its params moved and not); its hand-formed gradient w.r.t. the
  hidden states and the head against numpy's (softmax - onehot) * weight + scale * kl weight * (p_tuned - p_base),
  taken back through the head. The KL's part of the gradient alone: ours at `scale` minus ours at 0."""
  config, trainable, frozen, base = tiny(method)
  rows, scale = batch(), 2.5
  inputs = (rows["inputs"], rows["positions"], rows["segment_ids"])
  loss_fn = make_anchored_loss(config, loss_chunk=4, on=on)
  value, (_, kl) = jax.jit(loss_fn)(trainable, (frozen, base), rows, None, scale)
  program = jax.make_jaxpr(jax.value_and_grad(loss_fn, has_aux=True))(trainable, (frozen, base), rows, None, scale)
  assert "[2,4,256]" in str(program) and "[2,16,256]" not in str(program)  # logits [B,T,V]: 4 positions at a time
  hidden_of = jax.jit(lambda p: Transformer(config).apply({"params": p}, *inputs, return_hidden=True))
  adapters_off = jax.tree.map(np.zeros_like, trainable)  # B = 0: the adapted projections add exactly nothing
  tuned_params = lora_lib.join(trainable, frozen)
  base_params = lora_lib.join(base or adapters_off, frozen)
  hidden, base_hidden = np.asarray(hidden_of(tuned_params)), np.asarray(hidden_of(base_params))
  head, base_head = np.asarray(tuned_params["lm_head"]), np.asarray(base_params["lm_head"])
  lt = log_softmax(hidden.astype(np.float64) @ head)  # the two models' logits, in float64
  lb = log_softmax(base_hidden.astype(np.float64) @ base_head)
  pt, pb = np.exp(lt), np.exp(lb)
  w, kw = rows["weights"].astype(np.float64), rows["anchor" if on == "replay" else "weights"].astype(np.float64)
  ce_ref = -np.sum(np.take_along_axis(lt, rows["targets"][..., None], -1)[..., 0] * w)
  kl_ref = np.sum(np.sum(pb * (lb - lt), -1) * kw)
  np.testing.assert_allclose(float(kl), kl_ref, rtol=2e-5)
  np.testing.assert_allclose(float(value), ce_ref + scale * kl_ref, rtol=2e-6)
  assert 0.1 < kl_ref / kw.sum() < 1  # a KL worth comparing: the models differ, not wildly

  kl_weights = rows["anchor" if on == "replay" else "weights"]
  objective = jax.jit(jax.grad(lambda h, v, s: anchored_cross_entropy(
      h, v, base_hidden, base_head, rows["targets"], rows["weights"], kl_weights, s, 4)[0], argnums=(0, 1)))
  dce = (pt - np.eye(head.shape[1])[rows["targets"]]) * w[..., None]
  dkl = scale * kw[..., None] * (pt - pb)
  ours, ce_only = objective(hidden, head, scale), objective(hidden, head, 0.0)
  for (dh, dv), dlogits in ((ours, dce + dkl), (jax.tree.map(np.subtract, ours, ce_only), dkl)):
    dh0, dv0 = dlogits @ head.T, np.einsum("btd,btv->dv", hidden, dlogits)
    np.testing.assert_allclose(dh, dh0, rtol=1e-4, atol=1e-5 * np.abs(dh0).max())
    np.testing.assert_allclose(dv, dv0, rtol=1e-4, atol=1e-5 * np.abs(dv0).max())


def two_files(tmp_path, steps: int = 8, **anchor) -> dict:
  """load_config settings of a short run on two small files, tasks.jsonl and general.jsonl (half as many examples
  per epoch), with `anchor` as anchor.KEY settings."""
  for name, word in (("tasks.jsonl", "blue"), ("general.jsonl", "green")):
    with open(tmp_path / name, "w") as f:
      f.writelines(json.dumps({"instruction": f"Say {word} {i}.", "output": f"{word} {i}"}) + "\n" for i in range(8))
  return {"tasks.n": 0, "data.train": f"{tmp_path}/tasks.jsonl,{tmp_path}/general.jsonl:0.5", "data.validation": "",
          "max_len": 64, "steps": steps, **{f"anchor.{k}": v for k, v in anchor.items()}}


def test_weight_zero_trains_bitwise_as_without_the_anchor(tiny_hf_dir, tmp_path):
  """anchor.weight 0, even with on='replay' and a file marked, gives the batches, the step and the losses and params
  of a config without the anchor: its step is the anchor-free make_train_step, with one forward pass (its program
  differs from the anchored one's)."""
  runs = [setup(load_config(model=tiny_hf_dir, **two_files(tmp_path, **anchor)), str(tmp_path / name))
          for name, anchor in (("plain", {}), ("zero", dict(weight=0.0, on="replay",
                                                                sources=f"{tmp_path}/general.jsonl")))]
  run, c = runs[1], runs[1].config
  position = run.pipeline.get_state()
  assert sorted(next(run.pipeline)) == sorted(packing.FIELDS)  # no `anchor` field
  run.pipeline.set_state(position)
  lr = optim.schedule(c.learning_rate, c.steps, c.warmup_steps, c.lr_decay, c.final_lr_fraction)
  tx = optim.optimizer(run.state["params"], lr, c.weight_decay, c.adam_b1, c.adam_b2, c.adam_eps, c.clip_norm)
  rows = jax.tree.map(np.asarray, run.next_batch())
  run.pipeline.set_state(position)
  program = lambda step, *args: jax.make_jaxpr(sharding.with_rules(step, run.mesh))(run.state, run.frozen, *args)
  built = run.train_step.trace(run.state, run.frozen, rows).jaxpr  # what setup jitted
  plain = program(make_train_step(run.model_config, tx, lr, c.loss_chunk), rows)
  assert str(built) == str(plain)
  anchored = program(make_train_step(run.model_config, tx, lr, c.loss_chunk, 0.1), rows, {})
  assert str(anchored) != str(plain)
  losses = [run_steps(r, 3) for r in runs]
  assert losses[0] == losses[1]
  for a, b in zip(jax.tree.leaves(host(runs[0].state)), jax.tree.leaves(host(runs[1].state))):
    np.testing.assert_array_equal(a, b)


def test_on_replay_weighs_the_marked_file_logs_the_whole_objective_and_a_large_weight_holds_the_base(tiny_hf_dir,
                                                                                                    tmp_path):
  """anchor.on='replay' with anchor.sources: only general.jsonl's source is marked; the logged loss is the
  cross-entropy (the eval step's, on the same batch and params) + weight x kl_to_base, and metrics.jsonl has both at
  every step. After 8 steps the KL to the base on the replay tokens stays near 0 at weight 500, where the same run
  without the anchor moves it away."""
  settings = two_files(tmp_path, weight=500.0, on="replay", sources=f"{tmp_path}/general.jsonl")
  run = setup(load_config(model=tiny_hf_dir, **settings), str(tmp_path / "anchored"))
  assert [s.anchor for s in run.pipeline.sources] == [False, True]
  rows = run.next_batch()
  assert 0 < float(rows["anchor"].sum()) < float(rows["weights"].sum())
  ce, _, count = run.eval_step(run.state["params"], run.frozen, {k: v[0] for k, v in rows.items()})
  run.state, metrics = run.train_step(run.state, run.frozen, rows)
  np.testing.assert_allclose(float(metrics["loss"]), float(ce / count) + 500 * float(metrics["kl_to_base"]),
                             rtol=1e-6)
  Trainer(run).fit()  # steps 2 to 8, logged
  lines = [json.loads(line) for line in open(tmp_path / "anchored" / "metrics.jsonl")]
  assert [(line["step"], "kl_to_base" in line) for line in lines if "loss" in line] == [(i, True) for i in range(2, 9)]

  plain = setup(load_config(model=tiny_hf_dir, **two_files(tmp_path)), str(tmp_path / "plain"))
  run_steps(plain, 8)
  rows = run.next_batch()
  kl = {name: float(run.train_step(jax.tree.map(jnp.copy, r.state), run.frozen, rows)[1]["kl_to_base"])
        for name, r in (("anchored", run), ("plain", plain))}
  assert kl["plain"] > 0.005 and kl["anchored"] < 0.05 * kl["plain"], kl


def test_the_pipeline_marks_the_tokens_of_marked_sources_only():
  """A marked source's examples (token ids from 100 up) have their trained tokens in `anchor`; the others' (ids under
  100) none, packed in the same rows."""
  rng = np.random.default_rng(0)

  def examples(low: int, n: int) -> list:
    ids = [rng.integers(low, low + 50, rng.integers(4, 20)).astype(np.int32) for _ in range(n)]
    return [(x, rng.random(len(x)) < 0.6) for x in ids]

  sources = [Source("plain", examples(1, 30)), Source("general", examples(100, 20), 0.5, anchor=True)]
  pipeline = Pipeline(sources, 48, 4, seed=0, process_index=0, process_count=1)
  for _ in range(6):
    rows = next(pipeline)
    assert rows.keys() == {*packing.FIELDS, "anchor"}
    np.testing.assert_array_equal(rows["anchor"], rows["weights"] * (rows["inputs"] >= 100))
  assert 0 < rows["anchor"].sum() < rows["weights"].sum()
  unmarked = [Source(s.name, s.examples, s.weight) for s in sources]
  assert Pipeline(unmarked, 48, 4, process_index=0, process_count=1).fingerprint() == pipeline.fingerprint()


@pytest.mark.parametrize("settings,message", [
    ({"anchor.weight": -0.5}, r"config.anchor.weight must be a number >= 0, got -0.5"),
    ({"anchor.weight": float("nan")}, r"config.anchor.weight must be a number >= 0, got nan"),
    ({"anchor.on": "prompts"}, r"config.anchor.on must be targets or replay, got 'prompts'"),
    ({"anchor.weight": 0.1, "anchor.on": "replay"}, r"config.anchor.on 'replay' needs replay data: replay.n > 0, "
                                                    r"or anchor.sources naming data.train files, got 'replay'"),
    ({"anchor.sources": "general.jsonl"}, r"config.anchor.sources must name files of data.train "),
])
def test_bad_anchor_settings_name_the_key(settings, message):
  with pytest.raises(ValueError, match=message):
    validate(load_config(model="demo", **settings))


def test_a_bad_anchor_on_the_command_line_is_one_line(tiny_hf_dir, tmp_path):
  result = itjax_in_process("train", "--config", os.path.join(ROOT, "configs", "tiny_lora.py"),
                            f"--config.model={tiny_hf_dir}", "--config.anchor.weight=0.1",
                            "--config.anchor.on=replay", "--workdir", str(tmp_path / "w"))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].endswith("config.anchor.on 'replay' needs replay data: replay.n > "
                                                         "0, or anchor.sources naming data.train files, got 'replay'")
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
