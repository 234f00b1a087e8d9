"""itjax vs transformers `generate` on a built-in model (SmolLM2-135M-Instruct; Gemma 3 270M with --model
gemma3-270m): batch 16, 128 new tokens, greedy, fp32, same run.

    python benchmarks/generate.py [--model demo|gemma3-270m] [--batch 16] [--new_tokens 128] [--repeats 2]

Both load the same GGUF (dequantised to fp32). Tokens/s counts generated tokens (every row runs the full 128 steps:
EOS stopping is disabled on both sides so the work is equal). itjax's compile time is reported apart.
"""

import argparse
import os
import time

import jax
import torch
import transformers

from itjax.io import demo_model
from itjax.model.generate import Generator
from itjax.interop.loading import load_model

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "List three fruits.",
             "Explain photosynthesis in one sentence.", "What is 12 times 7?", "Give me a synonym for happy.",
             "Translate 'good morning' into Spanish.", "Name a planet with rings."]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--new_tokens", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=2)
  ap.add_argument("--model", default="demo", choices=sorted(demo_model.BUILTINS))
  args = ap.parse_args()
  torch.set_num_threads(os.cpu_count())
  path = demo_model.fetch(name=args.model)
  loaded = load_model(path)
  tok = loaded.tokenizer
  template = None if tok.chat_template else "none"  # a base model without a template: the question as it stands
  prompts = [tok.encode_chat([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], template=template)
             for i in range(args.batch)]
  n_tokens = args.batch * args.new_tokens

  # itjax: no EOS (an id outside the vocabulary), so all rows run every step.
  gen = Generator(loaded.config, loaded.params, eos_ids=[loaded.config.vocab_size], pad_id=tok.pad_id)
  t = time.perf_counter()
  gen.generate(prompts, args.new_tokens)
  first = time.perf_counter() - t
  times = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    out = gen.generate(prompts, args.new_tokens)
    times.append(time.perf_counter() - t)
  assert all(len(o.tokens) == args.new_tokens for o in out)
  itjax_tps = n_tokens / min(times)

  directory, name = os.path.split(path)
  hf = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
  width = max(len(p) for p in prompts)
  ids = torch.tensor([[tok.pad_id] * (width - len(p)) + p for p in prompts])
  mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
  kwargs = dict(attention_mask=mask, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                do_sample=False, pad_token_id=tok.pad_id)
  with torch.inference_mode():
    hf.generate(ids, **kwargs, max_length=None)
    hf_times = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      out = hf.generate(ids, **kwargs)
      hf_times.append(time.perf_counter() - t)
  assert out.shape[1] - width == args.new_tokens
  hf_tps = n_tokens / min(hf_times)

  print(f"model {args.model} ({loaded.config.model_type}, vocabulary {loaded.config.vocab_size:,}); device: "
        f"{jax.devices()[0].device_kind}, torch threads {torch.get_num_threads()}")
  print(f"batch {args.batch} x {args.new_tokens} new tokens, greedy, fp32 (best of {args.repeats})")
  print(f"itjax:        {itjax_tps:8.1f} tokens/s  ({min(times):.2f} s; first call incl. compile {first:.1f} s)")
  print(f"transformers: {hf_tps:8.1f} tokens/s  ({min(hf_times):.2f} s)")
  print(f"ratio itjax/transformers: {itjax_tps / hf_tps:.2f}x")


if __name__ == "__main__":
  main()
