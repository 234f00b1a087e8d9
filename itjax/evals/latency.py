"""The `latency` suite: what a model costs at inference, on the same prompts for each variant.

Variants: `base`, the tuned model `merged` (adapters folded into the kernels, what an export serves) and `unmerged`
(adapters applied at run time). Per variant, greedy, compile time excluded:
  ttft_s            prefill + first token, one prompt at a time (mean)
  decode_tok_s_b1   decode tokens per second with one slot
  decode_tok_s_b16  decode tokens per second with 16 slots (as many as there are prompts, if fewer)
  mean_new_tokens   generated tokens per prompt
  s_per_prompt      prefill + decode seconds per prompt with 16 slots
`ratio/METRIC` divides a variant's figure by the base's: s_per_prompt's ratio is mean_new_tokens' ratio (longer
answers) times the cost per token (the adapter's own share). The report shows the tuned model's figures as those
of `model` (merged), the unmerged variant's beside them as unmerged/METRIC, and the base's as `base`.
"""

from __future__ import annotations

from itjax.evals import ifeval
from itjax.evals import tasks as eval_tasks
from itjax.evals.registry import register
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Sources, Suite

BATCH = 16
SINGLE_PROMPTS = 4  # prompts decoded one slot at a time (slow: every step computes one row)
METRICS = ("ttft_s", "decode_tok_s_b1", "decode_tok_s_b16", "mean_new_tokens", "s_per_prompt")


def measure(subject: Subject, prompts: list[list[int]], settings: Settings) -> tuple[dict[str, float], list]:
  gen = subject.generator
  single = prompts[:SINGLE_PROMPTS]
  subject.generate(single, settings, "latency b1", batch_size=1)
  t1 = gen.timing
  outs = subject.generate(prompts, settings, f"latency b{BATCH}", batch_size=BATCH)
  t16 = gen.timing
  metrics = {"ttft_s": sum(t1.first_token_s) / len(t1.first_token_s),
             "decode_tok_s_b1": t1.decode_tokens / max(t1.decode_s, 1e-9),
             "decode_tok_s_b16": t16.decode_tokens / max(t16.decode_s, 1e-9),
             "mean_new_tokens": sum(len(o.tokens) for o in outs) / len(outs),
             "s_per_prompt": (t16.prefill_s + t16.decode_s) / len(prompts)}
  return metrics, outs


def evaluate(variants: dict[str, Subject], chats: list[list[dict]], settings: Settings) -> dict[str, SuiteOutput]:
  """{variant: SuiteOutput}; the tuned variants' metrics carry ratio/METRIC against 'base' when it is measured."""
  first = next(iter(variants.values()))
  prompts = first.encode(chats)
  measured = {label: measure(s, prompts, settings) for label, s in variants.items()}
  outputs = {}
  for label, (metrics, outs) in measured.items():
    if "base" in measured and label != "base":
      base = measured["base"][0]
      metrics.update({f"ratio/{k}": metrics[k] / base[k] for k in METRICS if base[k]})
    if label == "unmerged" and "merged" in measured:
      same = [a.tokens == b.tokens for a, b in zip(outs, measured["merged"][1])]
      metrics["identical_to_merged"] = 100.0 * sum(same) / len(same)
    rows = [{"prompt": chat[-1]["content"], "response": first.tokenizer.decode(o.tokens),
             "new_tokens": len(o.tokens)} for chat, o in zip(chats, outs)]
    outputs[label] = SuiteOutput(metrics, rows, {k: metrics[k] for k in ("decode_tok_s_b1", "decode_tok_s_b16",
                                                                          "mean_new_tokens")})
  return outputs


class Latency(Suite):
  """`itjax eval` only: it measures saved models, the tuned one merged and unmerged against its base."""
  name, unit = "latency", "tokens/s, tokens"
  not_percent = frozenset(METRICS) | Suite.not_percent
  roles = ("model", "base", "unmerged")
  live_roles = ()

  def read(self, sources: Sources) -> list[list[dict]]:
    """The chats: the IFEval prompts when the run has an IFEval file, else the task prompts; the first
    sources.limit of them (BATCH when None)."""
    records = ifeval.read_records(sources)
    if records is not None:
      chats = [[{"role": "user", "content": r["prompt"]}] for r in records]
    else:
      chats = [[m for m in r["messages"] if m["role"] != "assistant"]
               for r in eval_tasks.read_records(sources, sources.limit)]
    return chats[:sources.limit or BATCH]

  def evaluate(self, subjects: dict[str, Subject], chats: list[list[dict]], settings: Settings
               ) -> dict[str, SuiteOutput]:
    variants = {"base": subjects["base"]} if "base" in subjects else {}
    variants.update({("merged" if k == "model" else k): s for k, s in subjects.items() if k != "base"})
    outputs = evaluate(variants, chats, settings)
    return {"model": _tuned(outputs), **({"base": outputs["base"]} if "base" in outputs else {})}


def _tuned(outputs: dict[str, SuiteOutput]) -> SuiteOutput:
  """The tuned model's figures (merged), with the unmerged variant's beside them as unmerged/METRIC."""
  merged = outputs["merged"]
  if "unmerged" in outputs:
    merged.metrics.update({f"unmerged/{k}": v for k, v in outputs["unmerged"].metrics.items()})
    merged.rows += [{**r, "variant": "unmerged"} for r in outputs["unmerged"].rows]
  return merged


register(Latency())
