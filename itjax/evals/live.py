"""The generation suites inside training (config.eval), on the run's live params."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from itjax.io import distributed
from itjax.model import lora as lora_lib

if TYPE_CHECKING:
  from itjax.training.loop import Run


def _adapters_are_zero(trainable: dict) -> bool:
  """Whether params with these trainable leaves compute what the base does: only adapters train and every lora_b
  is zero (as initialised, before the first step)."""
  flat = lora_lib.flatten(trainable)
  return bool(flat) and all(lora_lib.is_trainable(k, lora_lib.LORA_ONLY) for k in flat) and all(
      bool(jnp.all(v == 0)) for k, v in flat.items() if k.endswith("/lora_b"))


class LiveEvaluator:
  """The generation suites (config.eval) on the live params: no checkpoint reload, and on accelerators no second
  copy of the weights (the scanned layout is decoded in place; on CPU decoding unrolls, which is faster there).
  One generator serves every evaluation, so its compiled functions are reused. The base of the forgetting suite
  is the frozen params with the adapters off; it does not change, so its answers are computed once."""

  def __init__(self, run: Run):
    from itjax.evals import forgetting, hallucination, ifeval, tasks
    from itjax.evals import text as general_text
    from itjax.evals.subject import Settings, Subject
    c = run.config.eval
    limit, subset = c.limit or None, c.subset or c.limit or None
    self.suites: dict[str, object] = {}
    tasks_dir = os.path.join(run.workdir, "tasks")
    has_tasks = os.path.isdir(tasks_dir)
    for suite in c.suites:
      if suite in ("tasks", "rigidity") and has_tasks:
        self.suites[suite] = tasks.load(tasks_dir, limit if suite == "tasks" else subset)
      elif suite == "ifeval":
        self.suites[suite] = ifeval.read_ifeval(c.data, limit)
      elif suite == "forgetting":
        count = c.n_probes or min(subset or forgetting.N_PROBES, forgetting.N_PROBES)
        probes = forgetting.make_probes(count, c.seed)  # not config.seed: runs of other seeds share them
        probes += forgetting.read_probes(c.probes) if c.probes else []
        self.suites[suite] = (tasks.load(tasks_dir, subset) if has_tasks else None,
                              forgetting.read_text(c.text or general_text.default_path(), c.text_bytes), probes)
      elif suite == "hallucination":
        self.suites[suite] = hallucination.load(subset or hallucination.N_QUESTIONS, c.seed)
    self.perturbations = tuple(c.perturbations) or None
    self.settings = Settings(max_new_tokens=c.max_new_tokens, batch_size=c.batch_size, limit=limit,
                             progress=distributed.primary())
    self.small = dataclasses.replace(self.settings, limit=subset)
    template, unroll = run.config.data.chat_template or None, jax.default_backend() == "cpu"
    self.subject = Subject("model", run.model_config, {}, run.tokenizer, template, unroll=unroll)
    self.base = Subject("base", run.model_config.replace(lora=None), run.frozen, run.tokenizer, template,
                        unroll=unroll) if "forgetting" in self.suites and run.model_config.lora else None
    self.base_cache: dict = {}

  def __call__(self, run: Run, step: int, writer) -> dict:
    """{suite: SuiteOutput} for the params as they are now; eval/SUITE/METRIC lines at `step`."""
    from itjax.evals import degenerate, forgetting, hallucination, ifeval, rigidity, tasks
    self.subject.set_params(lora_lib.join(run.state["params"], run.frozen))
    outputs = {}
    for suite, data in self.suites.items():
      if suite == "tasks":
        outputs[suite] = tasks.evaluate(self.subject, data, self.settings)
      elif suite == "ifeval":
        outputs[suite] = ifeval.evaluate(self.subject, data, self.settings)
        degenerate.add_degeneration({"model": outputs[suite]})
      elif suite == "forgetting":
        task_records, text, probes = data
        same = _adapters_are_zero(run.state["params"])
        outputs[suite] = forgetting.evaluate(self.subject, self.base, task_records, self.small, text, probes,
                                             self.base_cache, model_is_base=same,
                                             n_general=run.config.eval.n_general or None)["model"]
      elif suite == "rigidity":
        outputs[suite] = rigidity.evaluate(self.subject, data, self.small, self.perturbations)
      else:
        outputs[suite] = hallucination.evaluate(self.subject, data, self.small)
      writer.write(step, {f"eval/{suite}/{k}": v for k, v in outputs[suite].metrics.items()})
    return outputs
