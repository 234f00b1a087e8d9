"""`itjax demo`: LoRA-tune SmolLM2-135M-Instruct on generated verifiable tasks and show what changed.

Fetches the model, writes the tasks, trains with configs/smollm2_135m_lora.py, whose in-training evaluation
(config.eval) runs before the first step and after the last: seen-type and held-out-type tasks (the gain),
forgetting (what it cost) and the base judging whether the general answers answer. The table compares the two, a
held-out task and a general prompt are shown before and after, and the run's report lands in WORKDIR/eval
(results.json, report.md).
"""

from __future__ import annotations

import os
import time

# itjax/configs links to the repository's configs/ and is package data, so an installed itjax has them too.
_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
CONFIG = os.path.join(_CONFIGS, "smollm2_135m_lora.py")
CONFIGS = {"demo": CONFIG, "smollm2-135m": CONFIG,  # `itjax demo --model NAME`: the built-in model's recipe
           "gemma3-270m": os.path.join(_CONFIGS, "gemma3_270m_lora.py")}
HEADLINE = (("tasks", "seen", "%"), ("tasks", "seen_answered", "% passed by an answer"), ("tasks", "heldout", "%"),
            ("tasks", "heldout_answered", "% passed by an answer"), ("tasks", "all", "%"),
            ("tasks", "hack_rate", "% of passes that are non-answers"), ("tasks", "mean_response_tokens", "tokens"),
            ("forgetting", "kl_general", "nats/token"), ("forgetting", "kl_tasks", "nats/token"),
            ("forgetting", "perplexity", "general text"), ("forgetting", "retention", "% of probes kept"),
            ("forgetting", "lost_probes", "the base's right ones"), ("forgetting", "gained_probes", "its wrong ones"),
            ("forgetting", "net_loss_p", "sign test, lost vs gained"),
            ("forgetting", "model_correct", "% probes right"),
            ("forgetting", "non_answer_rate", "% general answers"),
            ("forgetting", "newly_non_answer", "prompts"),
            ("forgetting", "no_longer_non_answer", "prompts"),
            ("forgetting", "non_answer_change_p", "sign test"),
            ("forgetting", "degenerate_rate", "% general answers"), ("forgetting", "mean_length", "tokens"),
            ("judge", "win_rate", "% tuned answer better"), ("judge", "loss_rate", "% base answer better"),
            ("rigidity", "clean", "%"), ("rigidity", "worst_drop", "points"), ("rigidity", "spread", "points"),
            ("rigidity", "refusal_rate", "%"))


def load_config(path: str = CONFIG, arg: str = ""):
  from itjax.training.config import from_file
  return from_file(path, arg)


def _say(message: str = "") -> None:
  print(message, flush=True)


def _eval_lines(workdir: str) -> dict[int, dict[str, float]]:
  """{step: {'SUITE/METRIC': value}} of the generation suites' lines in metrics.jsonl (kept across resumes)."""
  from itjax.training.plots import read_records
  out: dict[int, dict[str, float]] = {}
  for record in read_records(workdir) or []:
    metrics = {k[len("eval/"):]: v for k, v in record.items() if k.startswith("eval/")}
    if metrics:
      out.setdefault(record["step"], {}).update(metrics)
  return out


def _suite(lines: dict[str, float], suite: str) -> dict[str, float]:
  return {k[len(suite) + 1:]: v for k, v in lines.items() if k.startswith(f"{suite}/")}


def _general_answer(evals: dict, steps: int) -> tuple[dict, dict] | None:
  """The forgetting suite's rows before and after of one general prompt: the first whose answer turned into a
  non-answer, else one that turned degenerate, else the first that changed, else the first."""
  if 0 not in evals or steps not in evals or "forgetting" not in evals[0]:
    return None
  pairs = [(b, a) for b, a in zip(evals[0]["forgetting"].rows, evals[steps]["forgetting"].rows)
           if b["kind"] == "general"]
  if not pairs:
    return None
  b, a = next((p for p in pairs if p[1].get("non_answer") and not p[0].get("non_answer")), None) or next(
      (p for p in pairs if p[1]["degenerate"] and not p[0]["degenerate"]), None) or next(
      (p for p in pairs if p[0]["response"] != p[1]["response"]), pairs[0])
  return b, a


def run_demo(workdir: str, config=None, stop=None) -> dict:
  """Trains and evaluates; `stop` (a threading.Event) ends training early with a checkpoint to resume from."""
  from itjax.evals import report
  from itjax.evals.forgetting import probe_count
  from itjax.training.plots import plot_before_after
  from itjax.training.loop import Trainer
  from itjax.training.setup import eval_batches, setup
  start = time.time()
  config = config or load_config()
  from itjax.io.demo_model import BUILTINS
  name = BUILTINS[config.model].title if config.model in BUILTINS else config.model
  _say(f"itjax demo: LoRA-tuning {name} on generated verifiable tasks (workdir {workdir})")
  run = setup(config, workdir)
  heldout_batches = eval_batches(run.config, os.path.join(workdir, "tasks", "heldout.jsonl"), run.tokenizer)
  frac = run.trainable_count / run.total_count
  _say(f"trainable params: {run.trainable_count:,} of {run.total_count:,} ({100 * frac:.2f}%), "
       f"LoRA rank {config.lora.rank} on {', '.join(config.lora.targets)}")
  _say(f"training data: {run.report.used} examples, {run.report.target_tokens:,} target tokens, packing "
       f"{100 * run.report.packing_efficiency:.1f}% full")
  subset = config.eval.subset or config.eval.limit
  probes, general = probe_count(config.eval.n_probes, subset), config.eval.n_general or subset
  parts = {"tasks": f"tasks on {config.eval.limit} seen-type and {config.eval.limit} held-out-type tasks, verified",
           "forgetting": f"forgetting (KL to the base, perplexity, {probes} probes, non-answers among {general} "
                         "general answers)",
           "judge": "the base judging the general answers against its own",
           "rigidity": f"rigidity ({subset} + {subset} tasks, perturbed)"}
  _say("evaluation before the first step and after the last (greedy): "
       + "; ".join(parts.get(s, s) for s in config.eval.suites))
  heldout_before = run.validation_loss(heldout_batches)  # the fresh adapters: the base model

  summary = Trainer(run, stop=stop, started=start).fit()
  if "stopped_at" in summary:
    _say(f"stopped at step {summary['stopped_at']}; run the demo again to go on from there")
    return {"summary": summary}
  lines = _eval_lines(workdir)
  before, after = lines.get(0, {}), lines.get(summary["steps"], {})
  losses = {"validation_loss": (summary.get("eval_loss_start"), summary.get("eval_loss_end")),
            "heldout_loss": (heldout_before, run.validation_loss(heldout_batches))}
  suites = {suite: report.suite_result(_suite(after, suite), _suite(before, suite) or None)
            for suite in config.eval.suites if _suite(after, suite)}
  suites["loss"] = report.suite_result({k: v[1] for k, v in losses.items() if v[1] is not None},
                                       {k: v[0] for k, v in losses.items() if v[0] is not None})
  results = {"model": f"{workdir} step {summary['steps']}", "base": f"{workdir} step 0 (the base)",
             "suites": suites, "settings": {"limit": config.eval.limit, "subset": subset,
                                            "max_new_tokens": config.eval.max_new_tokens}}
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  report.write_results(os.path.join(workdir, "eval"), results)

  _say(f"\n{'':50s} {'before':>10s} {'after':>10s} {'delta':>10s}")
  rows = [(f"{k.replace('_', ' ')}", *v, "{:.4f}") for k, v in losses.items() if None not in v]
  rows += [(f"{suite} {k} ({unit})", before.get(f"{suite}/{k}"), after[f"{suite}/{k}"],
            "{:.4f}" if k.startswith("kl_") else "{:.3f}" if k.endswith("_p") else "{:.1f}")
           for suite, k, unit in HEADLINE if f"{suite}/{k}" in after]
  for label, b, a, fmt in rows:
    if b is None:
      _say(f"{label:50s} {'':>10s} {fmt.format(a):>10s}")
    else:
      _say(f"{label:50s} {fmt.format(b):>10s} {fmt.format(a):>10s} {fmt.replace('{:', '{:+').format(a - b):>10s}")
  _say(f"before/after chart: {plot_before_after(workdir, os.path.join(workdir, 'before_after.png'))}")
  evals = summary["evals"]
  if 0 in evals and summary["steps"] in evals:  # this call evaluated both: show two held-out tasks
    b_rows, a_rows = evals[0]["tasks"].rows, evals[summary["steps"]]["tasks"].rows
    held = [i for i, r in enumerate(a_rows) if r["split"] == "heldout"]
    fixed = [i for i in held if a_rows[i]["passed"] and not b_rows[i]["passed"]]
    for i in (fixed + [i for i in held if i not in fixed])[:2]:
      _say(f"\n>>> {a_rows[i]['prompt']}   [types: {', '.join(a_rows[i]['types'])}]")
      for label, r in (("before", b_rows[i]), ("after", a_rows[i])):
        _say(f"--- {label} ({'pass' if r['passed'] else 'fail'}):\n{r['response'].strip()}")
  general = _general_answer(evals, summary["steps"])
  if general:
    _say(f"\n>>> {general[1]['prompt']}   [a general prompt: what tuning did to it]")
    for label, row in zip(("before", "after"), general):
      kind = row.get("non_answer_kind")
      _say(f"--- {label}{f' (a non-answer: {kind})' if kind else ''}:\n{row['response'].strip()}")
  minutes = (time.time() - start) / 60
  _say(f"\nreport: {os.path.join(workdir, 'eval', 'report.md')}   curves: {summary.get('plot')}   "
       f"metrics: {os.path.join(workdir, 'metrics.jsonl')}   total time {minutes:.1f} min")
  return {"before": before, "after": after, "losses": losses, "summary": summary, "minutes": minutes}
