"""The training step of each arm of experiments/lora_vs_full.py, in one process, beside transformers + peft.

    python benchmarks/lora_vs_full.py [--steps 6] [--skip_peer]

The sweep's runs report their median step time, but runs that share a machine with other work (or follow each other
through a day of changing load) cannot be compared on it. Here every arm's step is built as `itjax train` builds it
(configs/smollm2_135m_lora.py with the arm's overrides: the demo's batch of one packed row of 256 tokens,
SmolLM2-135M from its GGUF) and the arms run in turns, one step each per round, so a machine's changing load falls
on all alike; each arm's figure is its best step after one untimed. Beside them, the peer on the same tokens:
transformers with a peft LoRA of rank 8 on every linear layer, and transformers fine-tuning every weight (AdamW,
gradient clipping, the loss on the same targets). Memory: XLA's analysis of each compiled step (arguments +
outputs - aliased + temp), the figure the sweep logs as step_memory_gb; for the peer, the bytes of its params,
gradients and AdamW state.
"""

from __future__ import annotations

import argparse
import tempfile

import jax
import numpy as np

import itjax
from itjax.io import demo_model
from itjax.training.setup import setup
from train_step import best_times, hf_model, peer_step

QV = (r".*/(q|v)_proj/kernel",)
ARMS = {"lora_r8": {}, "lora_r2": {"lora__rank": 2, "lora__alpha": 4.0},
        "lora_r32": {"lora__rank": 32, "lora__alpha": 64.0}, "lora_r8_qv": {"lora__targets": QV},
        "full": {"method": "full", "learning_rate": 5e-5}}
GIB = 1024 ** 3


def itjax_arm(name: str, overrides: dict, model, root: str):
  """(one step as a function, the step's compiled memory in GiB, trainable params, a batch) of one arm."""
  config = itjax.config("smollm2_135m_lora", replay__n=0, tasks__n=64, eval__suites=(), **overrides)
  run = setup(config, f"{root}/{name}", model=model)
  batch = run.next_batch()
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), (run.state, batch))
  m = run.train_step.lower(spec[0], run.frozen, spec[1]).compile().memory_analysis()
  memory = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes) / GIB
  holder = {"state": run.state}

  def one():
    holder["state"], metrics = run.train_step(holder["state"], run.frozen, batch)
    jax.block_until_ready(metrics)

  one()  # compiled and run once, untimed
  return one, memory, run.trainable_count, batch


def peer_steps(batch) -> dict[str, tuple[object, float]]:
  """{name: (one step, GiB of params + grads + AdamW state)}: peft LoRA rank 8 and full fine-tuning."""
  inputs = np.array(batch["inputs"]).reshape(-1, np.shape(batch["inputs"])[-1])
  targets = np.where(np.asarray(batch["weights"]).reshape(inputs.shape) > 0,
                     np.asarray(batch["targets"]).reshape(inputs.shape), -100)
  out = {}
  for arm, rank in (("peft_lora_r8", 8), ("torch_full", None)):
    model = hf_model("demo", None, "float32")
    one = peer_step(model, inputs, targets, rank)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out[arm] = (one, 4 * (sum(p.numel() for p in model.parameters()) + 3 * trained) / GIB)
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=6, help="timed rounds (every arm one step each)")
  ap.add_argument("--skip_peer", action="store_true")
  args = ap.parse_args()
  model = itjax.load(demo_model.fetch())
  with tempfile.TemporaryDirectory() as root:
    arms = {name: itjax_arm(name, overrides, model, root) for name, overrides in ARMS.items()}
    batch = arms["lora_r8"][3]
    peers = {} if args.skip_peer else peer_steps(batch)
    fns = [a[0] for a in arms.values()] + [p[0] for p in peers.values()]
    times = dict(zip([*arms, *peers], best_times(fns, args.steps)))
  tokens = int(np.size(batch["inputs"]))
  total = int(sum(np.size(x) for x in jax.tree.leaves(model.params)))
  print(f"{tokens} tokens a step (rows x length), best of {args.steps} rounds, arms in turns; "
        f"{jax.devices()[0].device_kind}")
  print(f"{'arm':<14} {'trainable':>10} {'share':>7} {'step s':>8} {'tok/s':>8} {'vs lora_r8':>10} {'memory GiB':>11}")
  for name, (_, memory, trainable, _) in arms.items():
    print(f"{name:<14} {trainable:>10,} {100 * trainable / total:>6.2f}% {times[name]:>8.3f} "
          f"{tokens / times[name]:>8.0f} {times[name] / times['lora_r8']:>10.2f} {memory:>11.2f}")
  for name, (_, held) in peers.items():
    print(f"{name:<14} {'':>10} {'':>7} {times[name]:>8.3f} {tokens / times[name]:>8.0f} "
          f"{times[name] / times['lora_r8']:>10.2f} {held:>11.2f}")
  if peers:
    print("(memory: itjax's is the whole compiled step, activations included; the peer's its params, gradients and "
          "AdamW state only)")
    print(f"itjax / peer step time: LoRA r8 {times['lora_r8'] / times['peft_lora_r8']:.2f}, "
          f"full {times['full'] / times['torch_full']:.2f} (below 1: itjax faster)")


if __name__ == "__main__":
  main()
