"""A LoRA training step: itjax vs transformers + peft on SmolLM2-135M, same run, plus a matmul FLOP/s reference.

    python benchmarks/train_step.py [--batch 8] [--length 256] [--rank 8] [--steps 4]

Both sides: the same GGUF weights dequantised to float32, LoRA rank 8 (alpha 16) on every linear layer of the
blocks, AdamW, batch 8 x 256 tokens of the same data, the loss on every token. Tokens/s is batch * length over the
best step time after warm-up (itjax's compile time is reported apart). FLOP/s uses the per-token count documented
in itjax/metrics.py (about 4 x params for LoRA), against the best of a large float32 matmul in JAX and in torch.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from itjax import demo_model, lora as lora_lib, optim
from itjax.loading import load_model
from itjax.metrics import train_flops_per_token
from itjax.model.config import LoraSpec
from itjax.model.llama import param_shapes
from itjax.train_step import compiler_options, make_train_step


def best_time(fn, steps: int) -> float:
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def matmul_flops(n: int = 2048) -> tuple[float, float]:
  """FLOP/s of an n x n x n float32 matmul in JAX and in torch."""
  import torch
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  t_jax = best_time(lambda: mm(a).block_until_ready(), 5)
  ta = torch.randn(n, n)
  torch.mm(ta, ta)
  t_torch = best_time(lambda: torch.mm(ta, ta), 5)
  return 2 * n ** 3 / t_jax, 2 * n ** 3 / t_torch


def itjax_step(loaded, batch: dict, rank: int, steps: int) -> tuple[float, float, float]:
  """(best seconds per step, compile seconds, FLOPs per token)."""
  config = loaded.config.replace(lora=LoraSpec(rank, 2.0 * rank), remat="attention")
  params = lora_lib.join(lora_lib.init_adapters(config, jax.random.PRNGKey(0)), loaded.params)
  trainable, frozen = lora_lib.split(params, lora_lib.LORA_ONLY)
  trainable, frozen = jax.device_put((trainable, frozen))
  lr = optim.schedule(1e-4, 1000, 0, "constant")
  tx = optim.optimizer(trainable, lr, weight_decay=0.0)
  state = {"step": jnp.zeros((), jnp.int32), "params": trainable, "opt_state": tx.init(trainable),
           "rng": jax.random.PRNGKey(0)}
  step = jax.jit(make_train_step(config, tx, lr, loss_chunk=64), donate_argnums=(0,),
                 compiler_options=compiler_options())
  batch = {k: jnp.asarray(v)[None] for k, v in batch.items()}
  t = time.perf_counter()
  state, m = step(state, frozen, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t

  def one():
    nonlocal state
    state, m = step(state, frozen, batch)
    jax.block_until_ready(m)

  one()
  flops = train_flops_per_token(config, param_shapes(config), set(lora_lib.flatten(trainable)),
                                batch["inputs"].shape[-1])
  return best_time(one, steps), compile_s, flops


def peft_step(path: str, inputs: np.ndarray, targets: np.ndarray, rank: int, steps: int) -> float:
  import peft
  import torch
  import transformers
  directory, name = os.path.split(path)
  model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
  lora = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
  model = peft.get_peft_model(model, lora)
  model.train()
  opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
  x, y = torch.as_tensor(inputs, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long)

  def one():
    logits = model(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)

  one()
  return best_time(one, steps)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--length", type=int, default=256)
  ap.add_argument("--rank", type=int, default=8)
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--skip_peer", action="store_true")
  args = ap.parse_args()
  import torch
  torch.set_num_threads(os.cpu_count())
  path = demo_model.fetch()
  loaded = load_model(path)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, loaded.config.vocab_size, (args.batch, args.length + 1)).astype(np.int32)
  batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:], "weights": np.ones((args.batch, args.length), np.float32),
           "segment_ids": np.ones((args.batch, args.length), np.int32),
           "positions": np.tile(np.arange(args.length, dtype=np.int32), (args.batch, 1))}
  tokens = args.batch * args.length
  jax_peak, torch_peak = matmul_flops()
  peak = max(jax_peak, torch_peak)
  print(f"float32 matmul 2048^3: JAX {jax_peak / 1e9:.1f} GFLOP/s, torch {torch_peak / 1e9:.1f} GFLOP/s "
        f"(peak used: {peak / 1e9:.1f})")
  seconds, compile_s, flops = itjax_step(loaded, batch, args.rank, args.steps)
  itjax_tps = tokens / seconds
  print(f"itjax  LoRA step: {seconds:.2f} s/step, {itjax_tps:.0f} tokens/s, {flops * itjax_tps / 1e9:.1f} GFLOP/s "
        f"= {100 * flops * itjax_tps / peak:.0f}% of the matmul peak ({100 * flops * itjax_tps / torch_peak:.0f}% "
        f"of torch's) (compile {compile_s:.1f} s; {flops / 1e6:.0f} MFLOP/token, ceiling {peak / flops:.0f} tokens/s)")
  if not args.skip_peer:
    peer_s = peft_step(path, batch["inputs"], batch["targets"], args.rank, args.steps)
    peer_tps = tokens / peer_s
    print(f"peft   LoRA step: {peer_s:.2f} s/step, {peer_tps:.0f} tokens/s, "
          f"{100 * flops * peer_tps / peak:.0f}% of the matmul peak ({100 * flops * peer_tps / torch_peak:.0f}% of "
          "torch's)")
    print(f"itjax / peft: {itjax_tps / peer_tps:.2f}x")


if __name__ == "__main__":
  main()
