"""The run's plots (itjax.training.plots) from a metrics.jsonl written here with lines like training's: loss.png,
evals.png and before_after.png are written, and a metric missing from some lines does not stop them."""

from __future__ import annotations

import json
import math
import os
import random

from itjax.training import metrics, plots

TYPES = ("acronym", "count_letter", "reverse_words", "title")
PERTURBATIONS = ("typos", "case", "system_prompt")


def _suites(progress: float, rng: random.Random) -> dict[str, float]:
  """eval/SUITE/METRIC of a demo-like run `progress` of the way through tuning (0: the base)."""
  seen, heldout = 8 + 40 * progress, 6 + 12 * progress
  out = {"tasks/seen": seen, "tasks/heldout": heldout, "tasks/all": (seen + heldout) / 2, "tasks/n_seen": 100.0,
         "tasks/n_heldout": 100.0, "tasks/mean_response_tokens": 60 - 35 * progress}
  out.update({f"tasks/type/{t}": 100 * rng.random() * progress for t in TYPES})
  lost, gained = round(9 * progress), round(3 * progress)
  out.update({"forgetting/degenerate_rate": 2 + 10 * progress, "forgetting/mean_length": 140 - 60 * progress,
              "forgetting/perplexity": 18 + 4 * progress, "forgetting/bits_per_byte": 0.95 + 0.05 * progress,
              "forgetting/text_bytes": 12000.0, "forgetting/text_tokens": 2900.0,
              "forgetting/kl_general": 0.21 * progress, "forgetting/kl_tasks": 0.35 * progress,
              "forgetting/retention": 100 - 100 * lost / 30, "forgetting/gained": 100 * gained / 18,
              "forgetting/lost_probes": float(lost), "forgetting/gained_probes": float(gained),
              "forgetting/net_loss_p": 1.0 if progress == 0 else 0.146, "forgetting/base_correct": 62.5,
              "forgetting/model_correct": 62.5 - 12.5 * progress, "forgetting/n_general": 24.0,
              "forgetting/n_probes": 48.0})
  clean = 9 + 30 * progress
  drops = {p: rng.uniform(0, 12) * progress for p in PERTURBATIONS}
  out.update({f"rigidity/accuracy/{p}": clean - d for p, d in drops.items()})
  out.update({f"rigidity/drop/{p}": d for p, d in drops.items()})
  out.update({f"rigidity/n/{p}": 50.0 for p in PERTURBATIONS})
  out.update({"rigidity/clean": clean, "rigidity/worst_drop": max(drops.values()), "rigidity/spread": 3.1 * progress,
              "rigidity/empty_rate": 0.0, "rigidity/refusal_rate": 4 * progress})
  return {f"eval/{k}": round(v, 6) for k, v in out.items()}


def write_metrics(workdir, steps: int = 140, eval_every: int = 0, leave_out: tuple[str, ...] = (),
                  seed: int = 0) -> str:
  """WORKDIR/metrics.jsonl as a run writes it: eval_loss and the suites' lines at step 0, a line per step (loss,
  accuracy, learning rate, timings), the suites (at the end, or every `eval_every`) and eval_loss at the end.
  `leave_out`: keys left out of the last evaluation's lines (as if a suite stopped reporting a metric)."""
  rng = random.Random(seed)
  lines = [{"step": 0, "eval_loss": 2.31}, {"step": 0, **_suites(0.0, rng)}]
  for step in range(1, steps + 1):
    trend = 0.35 + 1.9 * math.exp(-step / 25)
    loss = max(0.03, trend * rng.lognormvariate(0, 0.55))  # a batch of short answers, or long ones
    lines.append({"step": step, "accuracy": round(1 / (1 + loss), 6), "grad_norm": round(rng.uniform(0.3, 2), 6),
                  "learning_rate": 2e-3, "loss": round(loss, 6), "target_tokens": float(rng.randint(80, 600)),
                  "step_time": 0.5, "target_tokens_per_s": 800.0, "tokens_per_s": 4000.0, "tflops": 0.005,
                  "mfu": None})
    if step == steps or (eval_every and step % eval_every == 0):
      evals = _suites(step / steps, rng)
      if step == steps:
        evals = {k: v for k, v in evals.items() if k not in leave_out}
      lines.append({"step": step, **evals})
  lines.append({"step": steps, "eval_loss": 1.12})
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(line) + "\n" for line in lines)
  return os.path.join(workdir, "metrics.jsonl")


def _png(path) -> bool:
  with open(path, "rb") as f:
    return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


def test_loss_evals_and_before_after_plots_are_written(tmp_path):
  workdir = str(tmp_path / "run")
  write_metrics(workdir, eval_every=35)
  assert metrics.plot_losses(workdir) == os.path.join(workdir, "loss.png")
  assert _png(os.path.join(workdir, "loss.png")) and _png(os.path.join(workdir, "evals.png"))
  out = os.path.join(workdir, "before_after.png")
  assert plots.plot_before_after(workdir, out) == out and _png(out)


def test_a_metric_missing_from_some_lines_is_drawn_where_it_is(tmp_path):
  workdir = str(tmp_path / "run")
  write_metrics(workdir, steps=20, leave_out=("eval/tasks/heldout", "eval/forgetting/kl_general",
                                              "eval/rigidity/worst_drop"))
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 20, "eval/tasks/seen": null, "eval/forgetting/perplexity": NaN}\n{"step": 21, "lo')  # cut short
  assert metrics.plot_losses(workdir) and _png(os.path.join(workdir, "evals.png"))
  assert plots.plot_before_after(workdir, str(tmp_path / "ba.png")) and _png(tmp_path / "ba.png")


def test_without_evaluations_there_is_a_loss_plot_and_nothing_else(tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  assert metrics.plot_losses(workdir) is None  # no metrics.jsonl
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write('{"step": 0, "eval_loss": 2.0}\n{"step": 1, "loss": 2.1}\n{"step": 2, "loss": 1.9}\n')
  assert _png(metrics.plot_losses(workdir)) and not os.path.exists(os.path.join(workdir, "evals.png"))
  assert plots.plot_before_after(workdir, str(tmp_path / "ba.png")) is None and not (tmp_path / "ba.png").exists()
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:  # evaluated at step 0 only: nothing to compare
    f.write('{"step": 0, "eval/tasks/seen": 10.0}\n')
  assert plots.plot_before_after(workdir, str(tmp_path / "ba.png")) is None


def test_units_keep_percentages_apart_from_the_rest():
  percent = {k for k in _suites(0.5, random.Random(0)) if plots.is_percent(k)}
  assert percent == {f"eval/{k}" for k in (
      "tasks/seen", "tasks/heldout", "tasks/all", "forgetting/degenerate_rate", "forgetting/retention",
      "forgetting/gained", "forgetting/base_correct", "forgetting/model_correct", "rigidity/clean",
      "rigidity/empty_rate", "rigidity/refusal_rate")}
  assert plots.unit("eval/forgetting/kl_tasks") == plots.unit("eval/forgetting/kl_general") != plots.PERCENT
  assert plots.unit("eval/rigidity/worst_drop") == "points (of accuracy)"
  for key in ("eval/tasks/n_seen", "eval/tasks/type/title", "eval/forgetting/text_bytes", "loss", "eval_loss"):
    assert plots.unit(key) is None, key
  assert metrics.is_percent is plots.is_percent


def test_more_non_answers_hacks_or_judged_losses_are_worse_and_p_values_have_no_side():
  """before_after.png colours a change by the metric's better side: the answer-quality metrics count what went
  wrong, so their rise is red; a p-value or the judge's ties have no better side, and p-values are not drawn."""
  for metric in ("non_answer_rate", "hack_rate", "newly_non_answer", "newly_degenerate", "loss_rate"):
    assert plots._verdict(metric, 1.0) == "worse" and plots._verdict(metric, -1.0) == "better", metric
  for metric in ("win_rate", "no_longer_non_answer", "no_longer_degenerate", "seen_answered", "relevance"):
    assert plots._verdict(metric, 1.0) == "better", metric
  for metric in ("tie_rate", "win_p", "non_answer_change_p", "degenerate_change_p", "net_loss_p"):
    assert plots._verdict(metric, 1.0) == "same", metric
    assert metric == "tie_rate" or metric in plots._NOT_BEFORE_AFTER
