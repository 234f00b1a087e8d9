"""Evaluation wall time: N IFEval-format prompts, greedy, itjax vs transformers `generate`, same run, same model.

    .venv/bin/python benchmarks/eval.py [--n 32] [--new_tokens 256] [--batch 16] [--slots 16,32] [--skip_peer]
        [--model SRC]

Both sides load the same SmolLM2-135M-Instruct GGUF (dequantised to fp32), encode the same chat-templated prompts
and stop at the model's own end-of-sequence ids, so answers have their natural, different lengths, as in an eval.
itjax runs continuous batching (`Generator.generate`; a finished row takes the next prompt), once per slot count in
`--slots` (default 16, the peer's batch; on this 2-core CPU 32 slots were not faster: a decode step's cost grows
about linearly with the rows, 55 ms at 16 and 100 ms at 32).
transformers runs `generate` on batches of `--batch` prompts in sequence, left-padded with an attention mask; its
prompts are sorted by length first (as a fair harness would, so a batch pads little), and each batch runs until
its slowest row is done. Measured: total wall time, seconds per prompt, generated tokens (up to, not including,
the EOS) and tokens/s; the ratio is transformers wall / itjax wall. itjax's compilation happens in an untimed
warm-up that compiles exactly the functions the timed call uses (checked: the timed call traces nothing);
transformers gets an untimed warm-up batch too. Also printed: how many prompts' greedy outputs are token-identical
between the two (informative only: float differences can flip near-ties).
"""

import argparse
import os
import time

import jax
import numpy as np
import torch
import transformers

from itjax.io import demo_model
from itjax.model.generate import Generator, bucket_length
from itjax.interop.loading import load_model

# Instruction prompts with verifiable formatting constraints, in the manner of IFEval (written for this benchmark).
# Some ask for long answers (they run to the token limit), some for a word or a line.
PROMPTS = [
  "Write an essay of at least 300 words about why cities should plant more trees. Do not use any commas.",
  "List exactly 3 bullet points about the benefits of drinking water. Use markdown bullets such as: * point",
  "What is the boiling point of water at sea level in Celsius? Answer in all lowercase letters and in one sentence.",
  "Write a short story about a lighthouse keeper who finds a message in a bottle. The story must have a title "
  "wrapped in double angular brackets, like <<title>>.",
  "Answer with one word only: what color is the sky on a clear day?",
  "Write a cover letter for a job as a barista. Your entire response must be in English and in all capital letters.",
  "Give two different names for a pet goldfish. Separate the two answers with six asterisks: ******",
  "Explain how a bicycle gear works to a ten-year-old. Your answer must contain at least 4 placeholders in square "
  "brackets, such as [address].",
  "Is the Pacific Ocean larger than the Atlantic Ocean? Answer with exactly one of: My answer is yes. / My answer "
  "is no. / My answer is maybe.",
  "Write a blog post of at least 250 words about learning to cook at home. Divide it into 3 sections, and mark the "
  "start of each with SECTION X.",
  "Name the largest planet in the solar system. Wrap your entire response in double quotation marks.",
  "Write a poem about autumn leaves. End your response with the exact phrase: Is there anything else I can help with?",
  "Describe the water cycle in exactly 4 paragraphs. Separate the paragraphs with the markdown divider ***",
  "Rewrite this sentence in a more formal tone: 'hey, the meeting got moved to friday, ok?' Do not use the word "
  "meeting.",
  "Write a product description for a solar-powered backpack. Highlight at least 2 sections with markdown, i.e. "
  "*highlighted section*.",
  "What is 15 plus 27? Give only the number, with no other words.",
  "Write a letter to a friend about your summer holiday, in at least 200 words. At the end, add a postscript "
  "starting with P.S.",
  "Summarize the plot of Romeo and Juliet in fewer than 50 words.",
  "Write a speech for a school graduation about perseverance. The word 'future' should appear at least 3 times.",
  "Provide your answer in JSON format: what are the three primary colors? Wrap the whole output in a JSON object.",
  "Write a limerick about a cat who loves to sleep. Do not use any capital letters.",
  "Write a detailed guide on how to start a vegetable garden, in at least 300 words. Include the keywords soil, "
  "sunlight and compost.",
  "Give a one-sentence definition of photosynthesis. Do not use the letter 'z' anywhere in your answer.",
  "Write a dialogue between a teacher and a student about homework, with at least 6 lines of dialogue. Put each "
  "speaker's name in bold.",
  "Translate 'thank you very much' into French. Respond with the translation only.",
  "Write a review of an imaginary restaurant called The Blue Spoon. Your response should contain at least 12 "
  "sentences.",
  "Write a riddle about a clock. First repeat the request word for word without change, then give your answer.",
  "Explain the difference between weather and climate. Your answer must be in exactly 2 paragraphs, separated by "
  "two line breaks, and the second paragraph must start with the word 'Climate'.",
  "List the days of the week in reverse order, separated by commas, in a single line.",
  "Write an article about the history of the bicycle, in at least 400 words. Finish with a section titled "
  "Conclusion.",
  "Suggest a name for a bakery. Your whole answer must be fewer than 10 words and must not contain any punctuation.",
  "Write a persuasive paragraph on why people should read more books. Use at least 5 words in all capital letters, "
  "and no more than 8.",
]


def log(msg: str) -> None:
  print(msg, flush=True)


def warmup_plan(prompts: list[list[int]], batch: int, new_tokens: int) -> tuple[list[list[int]], int]:
  """Prompts and a max_new_tokens for an untimed call that compiles what the real call will use: `generate` keys
  its decode function on (slots, cache length = bucket(longest prompt) + max_new_tokens) and each prefill on
  (slots, cache length, prompt bucket). One prompt per bucket, plus, where it shortens the warm-up, a filler prompt
  in a larger bucket with fewer new tokens that gives the same cache length."""
  slots = min(batch, len(prompts))
  top = bucket_length(max(len(p) for p in prompts))
  length = top + new_tokens
  by_bucket = {}
  for p in sorted(prompts, key=len, reverse=True):
    by_bucket.setdefault(bucket_length(len(p)), p)  # the longest of each bucket
  chosen = list(by_bucket.values())
  filler_bucket = 1 << ((length - 1).bit_length() - 1) # the largest power of two below the cache length
  max_new = new_tokens
  if filler_bucket > top and len(chosen) < slots:
    longest = max(prompts, key=len)
    filler = (longest * (filler_bucket // len(longest) + 1))[:filler_bucket]  # bucket(len) == filler_bucket
    chosen.append(filler)
    max_new = length - filler_bucket
  rest = [p for p in prompts if all(p is not c for c in chosen)]
  chosen += rest[:max(0, slots - len(chosen))]  # as many prompts as slots, so the slot count matches
  assert min(batch, len(chosen)) == slots and bucket_length(max(len(p) for p in chosen)) + max_new == length
  return chosen, max_new


def until_eos(ids, eos: set[int]) -> list[int]:
  out = []
  for t in ids:
    if t in eos:
      break
    out.append(int(t))
  return out


def run_itjax(loaded, prompts, args, slots):
  tok = loaded.tokenizer
  gen = Generator(loaded.config, loaded.params, eos_ids=tok.eos_ids, pad_id=tok.pad_id)
  warm, warm_new = warmup_plan(prompts, slots, args.new_tokens)
  log(f"[itjax, {slots} slots] warm-up (compile): {len(warm)} prompts x {warm_new} new tokens")
  t = time.perf_counter()
  gen.generate(warm, warm_new, batch_size=slots)
  compile_s = time.perf_counter() - t
  traces = gen.traces
  log(f"[itjax, {slots} slots] warm-up done in {compile_s:.1f} s ({traces} traces); timed run: {len(prompts)} prompts")
  t = time.perf_counter()
  out = gen.generate(prompts, args.new_tokens, batch_size=slots)
  wall = time.perf_counter() - t
  assert gen.traces == traces, f"the timed call traced {gen.traces - traces} function(s): warm-up missed a shape"
  log(f"[itjax] done in {wall:.1f} s")
  return [o.tokens for o in out], wall, compile_s, gen.timing


def run_transformers(path, tok, prompts, args):
  device = "cuda" if torch.cuda.is_available() else "cpu"
  log(f"[transformers] loading {os.path.basename(path)} on {device}")
  if path.endswith(".gguf"):
    directory, name = os.path.split(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
  else:
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
  hf = hf.to(device).eval()
  eos = list(tok.eos_ids)
  kwargs = dict(max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_id)

  def batch_inputs(rows):
    width = max(len(p) for p in rows)
    ids = torch.tensor([[tok.pad_id] * (width - len(p)) + p for p in rows], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows], device=device)
    return ids, mask

  def sync():
    if device == "cuda":
      torch.cuda.synchronize()

  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  results = [None] * len(prompts)
  with torch.inference_mode():
    ids, mask = batch_inputs([prompts[i] for i in order[:args.batch]])
    log(f"[transformers] warm-up: one batch of {len(ids)} x 16 new tokens")
    hf.generate(ids, attention_mask=mask, **{**kwargs, "max_new_tokens": 16})
    sync()
    log(f"[transformers] timed run: {len(prompts)} prompts, sorted by length, batches of {args.batch}")
    t = time.perf_counter()
    for start in range(0, len(order), args.batch):
      part = order[start:start + args.batch]
      ids, mask = batch_inputs([prompts[i] for i in part])
      out = hf.generate(ids, attention_mask=mask, **kwargs)
      new = out[:, ids.shape[1]:].tolist()
      for i, row in zip(part, new):
        results[i] = until_eos(row, set(eos))
      log(f"[transformers]   batch {start // args.batch + 1}: {len(part)} prompts, {len(new[0])} steps, "
          f"{time.perf_counter() - t:.1f} s so far")
    sync()
    wall = time.perf_counter() - t
  log(f"[transformers] done in {wall:.1f} s")
  return results, wall


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=32, help="how many prompts (the list repeats past its length)")
  ap.add_argument("--new_tokens", type=int, default=256)
  ap.add_argument("--batch", type=int, default=16, help="the peer's batch size")
  ap.add_argument("--slots", type=lambda v: [int(x) for x in v.split(",")], default=[16],
                  help="itjax's slot counts, comma-separated (each a separate timed run)")
  ap.add_argument("--skip_peer", action="store_true", help="itjax only")
  ap.add_argument("--model", default=None, help="a HF directory or .gguf instead of the demo's SmolLM2 GGUF")
  args = ap.parse_args()
  torch.set_num_threads(os.cpu_count())
  path = args.model or demo_model.fetch()
  log(f"[setup] loading {os.path.basename(path)}")
  loaded = load_model(path)
  tok = loaded.tokenizer
  texts = [PROMPTS[i % len(PROMPTS)] for i in range(args.n)]
  prompts = [tok.encode_chat([{"role": "user", "content": p}], add_generation_prompt=True) for p in texts]
  lengths = [len(p) for p in prompts]
  log(f"[setup] {args.n} prompts, {min(lengths)}-{max(lengths)} tokens (mean {np.mean(lengths):.0f}); "
      f"eos ids {list(tok.eos_ids)}, pad id {tok.pad_id}")

  runs = {slots: run_itjax(loaded, prompts, args, slots) for slots in args.slots}
  peer = None if args.skip_peer else run_transformers(path, tok, prompts, args)

  def row(name, outputs, seconds):
    counts = [len(o) for o in outputs]
    total = sum(counts)
    at_limit = sum(c == args.new_tokens for c in counts)
    print(f"{name:<16} {seconds:9.2f} {seconds / len(outputs):11.3f} {total:9d} {total / len(outputs):9.1f} "
          f"{total / seconds:9.1f} {at_limit:9d}")

  print()
  print(f"device: {jax.devices()[0].device_kind} (jax {jax.default_backend()}), torch threads "
        f"{torch.get_num_threads()}" + (", torch on cuda" if torch.cuda.is_available() else "") +
        f", load average {os.getloadavg()[1]:.2f} (5 min; other processes skew CPU timings)")
  print(f"{args.n} IFEval-format prompts, up to {args.new_tokens} new tokens, greedy, fp32, batch {args.batch}, "
        f"stop at EOS")
  print(f"{'':<16} {'wall s':>9} {'s/prompt':>11} {'tokens':>9} {'tok/prompt':>9} {'tokens/s':>9} {'hit limit':>9}")
  for slots, (ours, wall, _, _) in runs.items():
    row(f"itjax {slots} slots", ours, wall)
  if peer:
    row(f"transformers b{args.batch}", peer[0], peer[1])
  for slots, (ours, wall, compile_s, timing) in runs.items():
    print(f"itjax {slots} slots: prefill {timing.prefill_s:.2f} s ({len(timing.first_token_s)} prompts, "
          f"{timing.prefill_s / len(timing.first_token_s) * 1e3:.0f} ms each), decode {timing.decode_s:.2f} s "
          f"({timing.decode_tokens} tokens, {timing.decode_tokens / max(timing.decode_s, 1e-9):.1f} tokens/s), "
          f"host/other {wall - timing.prefill_s - timing.decode_s:.2f} s; warm-up incl. compile {compile_s:.1f} s")
    if peer:
      same = sum(a == b for a, b in zip(ours, peer[0]))
      print(f"  token-identical greedy outputs with transformers: {same}/{args.n}; "
            f"ratio transformers wall / itjax wall: {peer[1] / wall:.2f}x")


if __name__ == "__main__":
  main()
