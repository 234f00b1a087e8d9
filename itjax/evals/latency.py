"""The `latency` suite: what a model costs at inference, on the same prompts for each variant.

Variants: `base`, the tuned model `merged` (adapters folded into the kernels, what an export serves) and `unmerged`
(adapters applied at run time). Per variant, greedy, compile time excluded:
  ttft_s                prefill + first token, one prompt at a time (mean)
  decode_tok_s_b1       decode tokens per second with one slot
  decode_tok_s_b16      decode tokens per second with 16 slots (as many as there are prompts, if fewer)
  mean_new_tokens       generated tokens per prompt
  s_per_prompt          prefill + decode seconds per prompt with 16 slots
  prefill_s_per_prompt  its prefill part
  decode_s_per_token    its decode part per decoded token
  s_per_prompt_spread   how much s_per_prompt moved between the timed rounds (% of the fastest): the timing's noise
Every program runs once untimed first (an XLA program's first runs are slower: they measured the first variant as
3.6-6x slower to its first token than the same programs a minute later), then the variants take turns for
ROUNDS timed rounds; each figure is the fastest round's (the b16 figures all from one round, so they add up).

`ratio/METRIC` divides a variant's figure by the base's, and the time ratio is split in two factors:
  ratio/s_per_prompt = ratio/from_length x ratio/from_cost
from_length is the ratio the variant's answer lengths would give at the base's costs (its decoded tokens per prompt
at the base's decode seconds per token, plus the base's prefill); from_cost is the rest: the cost of a token and of a
prefill (adapters applied at run time, a different model) and the decode loop's granularity (it runs in chunks of
16 steps, so an answer that ends mid-chunk leaves steps unused) and tail (an answer that runs to the limit after the
others have ended keeps all 16 slots decoding for one). A merged LoRA model has the base's shapes and runs the
base's programs, so its from_cost is 1 but for noise and the tail. The report shows the tuned model's
figures as those of `model` (merged), the unmerged variant's beside them as unmerged/METRIC, and the base's as
`base`.
"""

from __future__ import annotations

import dataclasses

from itjax.evals import ifeval
from itjax.evals import tasks as eval_tasks
from itjax.evals.registry import register
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Sources, Suite

BATCH = 16
SINGLE_PROMPTS = 4  # prompts decoded one slot at a time (slow: every step computes one row)
ROUNDS = 2  # timed rounds per variant, after the untimed one
METRICS = ("ttft_s", "decode_tok_s_b1", "decode_tok_s_b16", "mean_new_tokens", "s_per_prompt",
           "prefill_s_per_prompt", "decode_s_per_token")


@dataclasses.dataclass
class _Rounds:
  """One variant's timed rounds: the b1 calls' Timing, the b16 calls' Timing, and the b16 answers."""
  b1: list = dataclasses.field(default_factory=list)
  b16: list = dataclasses.field(default_factory=list)
  outs: list | None = None


def _warm_up(subject: Subject, prompts: list[list[int]], settings: Settings) -> None:
  """Runs every program the timed calls run, once: the b1 call, and a b16 call on as many slots with the longest
  prompt and one prompt of each length bucket (the same prefill, insert and decode programs, for less time)."""
  from itjax.model.generate import bucket_length
  subject.generate(prompts[:SINGLE_PROMPTS], settings, "latency warm-up b1", batch_size=1)
  by_bucket = {bucket_length(len(p)): i for i, p in enumerate(prompts)}
  longest = max(range(len(prompts)), key=lambda i: len(prompts[i]))
  picked = sorted({longest, *by_bucket.values()})
  picked += [i for i in range(len(prompts)) if i not in picked][:max(0, min(BATCH, len(prompts)) - len(picked))]
  subject.generate([prompts[i] for i in picked], settings, "latency warm-up", batch_size=BATCH)


def _timed_round(subject: Subject, prompts: list[list[int]], settings: Settings, into: _Rounds) -> None:
  subject.generate(prompts[:SINGLE_PROMPTS], settings, "latency b1", batch_size=1)
  into.b1.append(subject.generator.timing)
  into.outs = subject.generate(prompts, settings, f"latency b{BATCH}", batch_size=BATCH)
  into.b16.append(subject.generator.timing)


def _figures(rounds: _Rounds, n_prompts: int) -> dict[str, float]:
  """The fastest round's figures (b1's and b16's apart; the b16 ones from one round)."""
  per_prompt = [(t.prefill_s + t.decode_s) / n_prompts for t in rounds.b16]
  best = rounds.b16[per_prompt.index(min(per_prompt))]
  return {"ttft_s": min(sum(t.first_token_s) / len(t.first_token_s) for t in rounds.b1),
          "decode_tok_s_b1": max(t.decode_tokens / max(t.decode_s, 1e-9) for t in rounds.b1),
          "decode_tok_s_b16": best.decode_tokens / max(best.decode_s, 1e-9),
          "mean_new_tokens": sum(len(o.tokens) for o in rounds.outs) / len(rounds.outs),
          "s_per_prompt": min(per_prompt),
          "prefill_s_per_prompt": best.prefill_s / n_prompts,
          "decode_s_per_token": best.decode_s / max(best.decode_tokens, 1),
          "decoded_per_prompt": best.decode_tokens / n_prompts,
          "s_per_prompt_spread": 100.0 * (max(per_prompt) - min(per_prompt)) / max(min(per_prompt), 1e-12)}


def _ratios(mine: dict[str, float], base: dict[str, float]) -> dict[str, float]:
  out = {f"ratio/{k}": mine[k] / base[k] for k in METRICS if base[k]}
  at_base_cost = base["prefill_s_per_prompt"] + mine["decoded_per_prompt"] * base["decode_s_per_token"]
  if base["s_per_prompt"] and at_base_cost:
    out["ratio/from_length"] = at_base_cost / base["s_per_prompt"]
    out["ratio/from_cost"] = mine["s_per_prompt"] / at_base_cost
  return out


def evaluate(variants: dict[str, Subject], chats: list[list[dict]], settings: Settings,
             rounds: int = ROUNDS) -> dict[str, SuiteOutput]:
  """{variant: SuiteOutput}; the tuned variants' metrics carry ratio/METRIC against 'base' when it is measured."""
  first = next(iter(variants.values()))
  prompts = first.encode(chats)
  for subject in variants.values():
    _warm_up(subject, prompts, settings)
  timed = {label: _Rounds() for label in variants}
  for _ in range(rounds):  # the variants take turns, so a slower minute of the machine is shared
    for label, subject in variants.items():
      _timed_round(subject, prompts, settings, timed[label])
  measured = {label: (_figures(r, len(prompts)), r.outs) for label, r in timed.items()}
  outputs = {}
  for label, (metrics, outs) in measured.items():
    if "base" in measured and label != "base":
      metrics.update(_ratios(metrics, measured["base"][0]))
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
  not_percent = frozenset(METRICS) | {"decoded_per_prompt"} | Suite.not_percent
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
