"""`itjax demo`: LoRA-tune SmolLM2-135M-Instruct on generated verifiable tasks and show what changed.

Fetches the model, writes the tasks, measures validation loss and verified accuracy on seen-type and held-out-type
tasks, trains with configs/smollm2_135m_lora.py, and measures again.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "smollm2_135m_lora.py")


def load_config(path: str = CONFIG, arg: str = ""):
  from itjax.config import from_file
  return from_file(path, arg)


def _say(message: str = "") -> None:
  print(message, flush=True)


def _merged(run):
  from itjax import lora
  params = lora.join(jax.device_get(run.state["params"]), jax.device_get(run.frozen))
  params = jax.tree.map(np.asarray, params)
  return lora.merge_adapters(run.model_config.replace(remat="none", dtype="float32"), params)


def run_demo(workdir: str, config=None, num_tasks: int = 32) -> dict:
  from itjax.evals import read_tasks, task_accuracy
  from itjax.train import eval_batches, evaluate, setup, train
  start = time.time()
  config = config or load_config()
  name = "SmolLM2-135M-Instruct" if config.model == "demo" else config.model
  _say(f"itjax demo: LoRA-tuning {name} on generated verifiable tasks (workdir {workdir})")
  run = setup(config, workdir)
  tasks_dir = os.path.join(workdir, "tasks")
  seen = read_tasks(os.path.join(tasks_dir, "validation.jsonl"), num_tasks)
  held = read_tasks(os.path.join(tasks_dir, "heldout.jsonl"), num_tasks)
  heldout_batches = eval_batches(run.config, os.path.join(tasks_dir, "heldout.jsonl"), run.tokenizer)
  template = config.data.chat_template or None
  frac = run.trainable_count / run.total_count
  _say(f"trainable params: {run.trainable_count:,} of {run.total_count:,} ({100 * frac:.2f}%), "
       f"LoRA rank {config.lora.rank} on {', '.join(config.lora.targets)}")
  _say(f"training data: {run.report.used} examples, {run.report.target_tokens:,} target tokens, packing "
       f"{100 * run.report.packing_efficiency:.1f}% full")

  base_config, base_params = _merged(run)
  before = {"validation_loss": evaluate(run), "heldout_loss": evaluate(run, heldout_batches)}
  _say("before: generating answers to seen-type and held-out-type tasks")
  before["seen"] = task_accuracy(base_config, base_params, run.tokenizer, seen, template=template)
  before["held"] = task_accuracy(base_config, base_params, run.tokenizer, held, template=template)
  del base_params

  summary = train(config, workdir, run)
  tuned_config, tuned_params = _merged(run)
  end_loss = summary["eval_loss_end"] if "eval_loss_end" in summary else evaluate(run)  # train's last evaluation
  after = {"validation_loss": end_loss, "heldout_loss": evaluate(run, heldout_batches)}
  _say("after: generating answers to the same tasks")
  after["seen"] = task_accuracy(tuned_config, tuned_params, run.tokenizer, seen, template=template)
  after["held"] = task_accuracy(tuned_config, tuned_params, run.tokenizer, held, template=template)

  rows = [("validation loss (seen types)", before["validation_loss"], after["validation_loss"], "{:.4f}"),
          ("held-out-type loss", before["heldout_loss"], after["heldout_loss"], "{:.4f}"),
          (f"verified accuracy, seen types ({len(seen)} tasks)", before["seen"].accuracy, after["seen"].accuracy,
           "{:.1%}"),
          (f"verified accuracy, held-out types ({len(held)} tasks)", before["held"].accuracy,
           after["held"].accuracy, "{:.1%}")]
  _say(f"\n{'':48s} {'before':>10s} {'after':>10s}")
  for name, b, a, fmt in rows:
    _say(f"{name:48s} {fmt.format(b):>10s} {fmt.format(a):>10s}")
  fixed = [i for i in range(len(held)) if after["held"].passed[i] and not before["held"].passed[i]]
  for i in (fixed + [i for i in range(len(held)) if i not in fixed])[:2]:
    _say(f"\n>>> {held[i]['messages'][0]['content']}   [types: {', '.join(held[i]['types'])}]")
    for name, result in (("before", before["held"]), ("after", after["held"])):
      mark = "pass" if result.passed[i] else "fail"
      _say(f"--- {name} ({mark}):\n{result.responses[i].strip()}")
  minutes = (time.time() - start) / 60
  _say(f"\nloss curves: {summary.get('plot')}   metrics: {os.path.join(workdir, 'metrics.jsonl')}   "
       f"total time {minutes:.1f} min")
  return {"before": before, "after": after, "summary": summary, "minutes": minutes}
