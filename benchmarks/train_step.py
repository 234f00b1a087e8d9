"""A LoRA training step: itjax vs transformers + peft on SmolLM2-135M, same run, plus a matmul FLOP/s reference.

    python benchmarks/train_step.py [--batch 8] [--length 256] [--rank 8] [--steps 4]
    python benchmarks/train_step.py --model smollm2-135m --dtype bfloat16 --batch 32 --length 1024   # on a GPU
    python benchmarks/train_step.py --trained 0.22   # the loss on 22% of the tokens, as the demo's tasks have it
    python benchmarks/train_step.py --skip_peer --anchor 0.1   # also the step with a KL-to-base anchor, and the ratio

Both sides: the same GGUF weights dequantised to float32 (or, with --model PRESET, random weights of that shape on
both sides), LoRA rank 8 (alpha 16) on every linear layer of the blocks, AdamW, the same batch of tokens, the loss
on every token, or with --trained F on the last F of every 80-token example (a prompt, then its answer; the peer
gets -100 labels elsewhere, as TRL's assistant-only loss does). Tokens/s is batch * length over the best step time after warm-up (itjax's compile time is reported
apart). FLOP/s uses the per-token count documented in itjax/metrics.py (about 4 x params for LoRA), against a large
matmul of the same dtype in JAX and in torch, on the device each runs on (the GPU when there is one). With
--trained below 1, itjax skips the vocabulary projection where no loss is taken and the peer does not: the count
stays the model's, so itjax's FLOP/s then reads higher than the work it did.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from itjax.io import demo_model
from itjax.model import lora as lora_lib
from itjax.training import optim
from itjax.interop.loading import load_model
from itjax.training.metrics import train_flops_per_token
from itjax.model.config import LoraSpec
from itjax.model.llama import param_shapes
from itjax.training.step import compiler_options, make_train_step


def best_time(fn, steps: int) -> float:
  return best_times([fn], steps)[0]


def torch_device():
  import torch
  return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync():
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def matmul_flops(dtype: str, n: int) -> tuple[float, float]:
  """FLOP/s of an n x n x n matmul in JAX and in torch."""
  import torch
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.dtype(dtype))
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  t_jax = best_time(lambda: mm(a).block_until_ready(), 5)
  ta = torch.randn(n, n, device=torch_device(), dtype=getattr(torch, dtype))
  torch.mm(ta, ta)
  torch_sync()
  t_torch = best_time(lambda: (torch.mm(ta, ta), torch_sync()), 5)
  return 2 * n ** 3 / t_jax, 2 * n ** 3 / t_torch


def best_times(fns, steps: int) -> list[float]:
  """The best time of each function over `steps` rounds, each round running every function once in turn, so that a
  machine's changing load falls on them alike."""
  times = [[] for _ in fns]
  for _ in range(steps):
    for fn, ts in zip(fns, times):
      t = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t)
  return [min(ts) for ts in times]


def itjax_step(model_config, base_params, batch: dict, rank: int, dtype: str,
               anchor: float = 0.0) -> tuple[object, float, float]:
  """(a function running one step, compile seconds, FLOPs per token); `anchor` > 0 adds that weight x KL to the
  base on the trained tokens (the base: the frozen params with the adapters off, a second forward pass)."""
  config = model_config.replace(lora=LoraSpec(rank, 2.0 * rank), remat="attention", dtype=dtype)
  params = lora_lib.join(lora_lib.init_adapters(config, jax.random.PRNGKey(0)), base_params)
  trainable, frozen = lora_lib.split(params, lora_lib.LORA_ONLY)
  frozen = jax.tree.map(lambda x: jnp.asarray(x, dtype), frozen)
  trainable, frozen = jax.device_put((trainable, frozen))
  lr = optim.schedule(1e-4, 1000, 0, "constant")
  tx = optim.optimizer(trainable, lr, weight_decay=0.0)
  state = {"step": jnp.zeros((), jnp.int32), "params": trainable, "opt_state": tx.init(trainable),
           "rng": jax.random.PRNGKey(0)}
  step = jax.jit(make_train_step(config, tx, lr, loss_chunk=64, anchor_weight=anchor), donate_argnums=(0,),
                 compiler_options=compiler_options())
  base = ({},) if anchor > 0 else ()  # LoRA: the anchor's base needs no copy
  batch = {k: jnp.asarray(v)[None] for k, v in batch.items()}
  t = time.perf_counter()
  state, m = step(state, frozen, batch, *base)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t

  def one():
    nonlocal state
    state, m = step(state, frozen, batch, *base)
    jax.block_until_ready(m)

  one()
  flops = train_flops_per_token(config, param_shapes(config), set(lora_lib.flatten(trainable)),
                                batch["inputs"].shape[-1])
  return one, compile_s, flops


class _NoTokens:  # hf_config_dict's token ids, for a config without a tokenizer
  bos_id, eos_ids, pad_id = None, (), None


def hf_model(source: str, model_config, dtype: str):
  """The peer's model: a built-in model's GGUF weights, or random weights of the preset's shape (any family)."""
  import torch
  import transformers
  from itjax.interop.export import hf_config_dict
  if source in demo_model.BUILTINS:
    directory, name = os.path.split(demo_model.fetch(name=source))
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
  else:
    fields = hf_config_dict(model_config, _NoTokens, "float32")
    config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    model = transformers.AutoModelForCausalLM.from_config(config)
  return model.to(device=torch_device(), dtype=getattr(torch, dtype))


def peer_step(model, inputs: np.ndarray, targets: np.ndarray, rank: int | None):
  """One training step of the peer as a function (run once already): a peft LoRA of `rank` on every linear layer of
  the blocks, or with rank None every weight; AdamW, gradient clipping, the loss on the targets that are not -100."""
  import peft
  import torch
  if rank is not None:
    lora = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = peft.get_peft_model(model, lora)
  model.train()
  trained = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(trained, lr=1e-4, weight_decay=0.0)
  x = torch.as_tensor(inputs, dtype=torch.long, device=torch_device())
  y = torch.as_tensor(targets, dtype=torch.long, device=torch_device())

  def one():
    logits = model(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                             ignore_index=-100)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trained, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch_sync()

  one()
  return one


def peft_step(model, inputs: np.ndarray, targets: np.ndarray, rank: int, steps: int) -> float:
  return best_time(peer_step(model, inputs, targets, rank), steps)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--length", type=int, default=256)
  ap.add_argument("--rank", type=int, default=8)
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--model", default="demo", help="a built-in model (demo: SmolLM2, gemma3-270m) or a preset name "
                  "(random weights: llama-3.2-1b, qwen3-0.6b, ...)")
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  ap.add_argument("--matmul", type=int, default=2048, help="size of the reference matmul")
  ap.add_argument("--skip_peer", action="store_true")
  ap.add_argument("--trained", type=float, default=1.0, help="share of the tokens that carry the loss")
  ap.add_argument("--anchor", type=float, default=0.0,
                  help="also time the step with a KL-to-base anchor of this weight, and give the ratio")
  args = ap.parse_args()
  import torch
  torch.set_num_threads(os.cpu_count())
  if args.model in demo_model.BUILTINS:
    loaded = load_model(args.model)
    model_config, base_params = loaded.config, loaded.params
  else:
    from itjax.model.config import PRESETS
    from itjax.model.llama import init_params
    model_config = PRESETS[args.model]
    base_params = init_params(model_config, jax.random.PRNGKey(1))
  print(f"model {args.model}, {args.dtype}, batch {args.batch} x {args.length}, LoRA rank {args.rank}, loss on "
        f"{args.trained:.0%} of the tokens; "
        f"JAX on {jax.devices()[0].device_kind}, torch on {torch_device()}")
  rng = np.random.default_rng(0)
  ids = rng.integers(0, model_config.vocab_size, (args.batch, args.length + 1)).astype(np.int32)
  answer = np.arange(args.length) % 80 >= round(80 * (1 - args.trained))  # each 80 tokens: prompt, then answer
  weights = np.tile(answer, (args.batch, 1)).astype(np.float32)
  batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:], "weights": weights,
           "segment_ids": np.ones((args.batch, args.length), np.int32),
           "positions": np.tile(np.arange(args.length, dtype=np.int32), (args.batch, 1))}
  tokens = args.batch * args.length
  jax_peak, torch_peak = matmul_flops(args.dtype, args.matmul)
  peak = max(jax_peak, torch_peak)
  print(f"{args.dtype} matmul {args.matmul}^3: JAX {jax_peak / 1e9:.1f} GFLOP/s, torch {torch_peak / 1e9:.1f} "
        f"GFLOP/s (peak used: {peak / 1e9:.1f})")
  peer_s = None
  if not args.skip_peer:  # first, so that torch can hand its GPU memory back before JAX takes what it needs
    labels = np.where(weights > 0, batch["targets"], -100)
    peer_s = peft_step(hf_model(args.model, model_config, args.dtype), batch["inputs"], labels, args.rank,
                       args.steps)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
  step, compile_s, flops = itjax_step(model_config, base_params, batch, args.rank, args.dtype)
  if args.anchor > 0:  # timed in turns with the plain step
    anchored, anchored_compile_s, _ = itjax_step(model_config, base_params, batch, args.rank, args.dtype,
                                                 args.anchor)
    seconds, anchored_s = best_times([step, anchored], args.steps)
  else:
    seconds, = best_times([step], args.steps)
  itjax_tps = tokens / seconds
  print(f"itjax  LoRA step: {seconds:.2f} s/step, {itjax_tps:.0f} tokens/s, {flops * itjax_tps / 1e9:.1f} GFLOP/s "
        f"= {100 * flops * itjax_tps / peak:.0f}% of the matmul peak ({100 * flops * itjax_tps / torch_peak:.0f}% "
        f"of torch's) (compile {compile_s:.1f} s; {flops / 1e6:.0f} MFLOP/token, ceiling {peak / flops:.0f} tokens/s)")
  if args.anchor > 0:
    print(f"itjax  LoRA step with anchor.weight {args.anchor}: {anchored_s:.2f} s/step, {tokens / anchored_s:.0f} "
          f"tokens/s, {anchored_s / seconds:.2f}x the plain step's time (compile {anchored_compile_s:.1f} s)")
  if peer_s is not None:
    peer_tps = tokens / peer_s
    print(f"peft   LoRA step: {peer_s:.2f} s/step, {peer_tps:.0f} tokens/s, "
          f"{100 * flops * peer_tps / peak:.0f}% of the matmul peak ({100 * flops * peer_tps / torch_peak:.0f}% of "
          "torch's)")
    print(f"itjax / peft: {itjax_tps / peer_tps:.2f}x")


if __name__ == "__main__":
  main()
