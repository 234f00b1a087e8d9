"""The suites of config.eval inside training, on the run's live params; the trainer writes what they return."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from itjax.errors import UserError
from itjax.evals import registry
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Inputs, Sources, Suite
from itjax.model import lora as lora_lib


def _adapters_are_zero(trainable: dict) -> bool:
  """Whether params with these trainable leaves compute what the base does: only adapters train and every lora_b
  is zero (as initialised, before the first step)."""
  flat = lora_lib.flatten(trainable)
  return bool(flat) and all(lora_lib.is_trainable(k, lora_lib.LORA_ONLY) for k in flat) and all(
      bool(jnp.all(v == 0)) for k, v in flat.items() if k.endswith("/lora_b"))


def live_sources(eval_config, tasks_dir: str | None, progress: bool = True) -> Sources:
  """What the suites of config.eval read: eval.limit examples per prompt set for tasks and ifeval, eval.subset
  (default: limit) for the suites that ask several sets; eval.seed for generated probes and questions (not
  config.seed: runs of other seeds are scored on the same ones)."""
  c = eval_config
  limit = c.limit or None
  settings = Settings(max_new_tokens=c.max_new_tokens, batch_size=c.batch_size, limit=limit, progress=progress)
  data = {"ifeval": c.data} if c.data else {}
  if tasks_dir:
    data["tasks"] = tasks_dir
  inputs = Inputs(text=c.text or None, text_bytes=c.text_bytes, probes=c.probes or None,
                  perturbations=tuple(c.perturbations) or None, n_probes=c.n_probes or None,
                  n_general=c.n_general or None, judge=c.get("judge") or None,
                  judge_mode=c.get("judge_mode") or None, judge_template=c.get("judge_template") or None)
  return Sources(settings, subset=c.subset or limit, seed=c.seed, data=data, inputs=inputs, live=True)


class LiveEvaluator:
  """The suites of config.eval on the live params: no checkpoint reload, and on accelerators no second copy of the
  weights (the scanned layout is decoded in place; on CPU decoding unrolls, which is faster there). One subject
  serves every evaluation, so its generator's compiled functions are reused. Suites that compare with the base
  (`live_roles` with 'base') get the frozen params with the adapters off (LoRA runs), or `reference`, the base's
  params as loaded (full fine-tuning); the base does not change, so what they compute from it is kept with it, and
  while the adapters are still zero (or before the first step) the model is marked as its base.

  `suites` maps the name of each suite that will run to the suite and its records (a suite without records here,
  tasks without a tasks directory say, does not run): empty when nothing will."""

  def __init__(self, eval_config, tasks_dir: str | None, model_config, tokenizer, frozen: dict,
               template: str | None, progress: bool, base_answers: str | None = None,
               reference: dict | None = None):
    sources = live_sources(eval_config, tasks_dir, progress)
    self.settings = sources.settings
    self.suites: dict[str, tuple[Suite, object]] = {}
    for name in eval_config.suites:
      suite = registry.get(name)
      if not suite.live_roles:
        raise UserError(f"config.eval.suites: the {name} suite does not run inside training (itjax eval runs it)")
      records = suite.read(sources)
      if records is not None:
        self.suites[name] = suite, records
    unroll = jax.default_backend() == "cpu"
    self.subjects = {"model": Subject("model", model_config, {}, tokenizer, template, unroll=unroll)}
    base_params = frozen if model_config.lora else reference
    if base_params is not None and any("base" in suite.live_roles for suite, _ in self.suites.values()):
      self.subjects["base"] = Subject("base", model_config.replace(lora=None), base_params, tokenizer, template,
                                      unroll=unroll)
    # The base's answers, by prompt and settings: shared by the base subject and by the model while it computes
    # what the base does; kept in `base_answers` (a file) when given, so the runs of an experiment answer once.
    self.base_answers_path = base_answers
    self.base_answers = read_answers(base_answers) if base_answers else {}
    self._saved = len(self.base_answers)
    self._states = read_states(base_answers) if base_answers and "base" in self.subjects else {}
    if "base" in self.subjects:
      self.subjects["base"].cache["answers"] = self.base_answers
      for name, state in self._states.items():
        if name in self.suites:
          self.suites[name][0].restore_base_state(self.subjects["base"], state)

  def __call__(self, trainable: dict, frozen: dict, at_start: bool = False) -> dict[str, SuiteOutput]:
    """{suite: the model's SuiteOutput} for the params as they are now (trainable joined with frozen), its rows
    with their per-example verdicts (Suite.itemize). `at_start`: the params are the base's (before the first
    step), so the model's answers are the base's."""
    model = self.subjects["model"]
    model.set_params(lora_lib.join(trainable, frozen))
    same = at_start or _adapters_are_zero(trainable)
    model.is_base = "base" in self.subjects and same
    if same:
      model.cache["answers"] = self.base_answers
    outputs = {}
    for name, (suite, records) in self.suites.items():
      given = {role: s for role, s in self.subjects.items() if role in suite.live_roles}
      outputs[name] = suite.evaluate(given, records, self.settings)["model"]
      suite.itemize(outputs[name])
    if self.base_answers_path and len(self.base_answers) > self._saved:
      write_answers(self.base_answers_path, self.base_answers)
      self._saved = len(self.base_answers)
    self._keep_states()
    return outputs

  def _keep_states(self) -> None:
    """The suites' base states (Suite.base_state) beside the base's answers, when they changed."""
    if not self.base_answers_path or "base" not in self.subjects:
      return
    states = {**self._states}
    for name, (suite, _) in self.suites.items():
      state = suite.base_state(self.subjects["base"])
      if state is not None:
        states[name] = state
    if states != self._states:
      from itjax.io import atomic
      atomic.write_json(_states_path(self.base_answers_path), states)
      self._states = states


def _states_path(answers_path: str) -> str:
  folder, name = os.path.split(answers_path)
  return os.path.join(folder, name.replace("answers-", "states-", 1).replace(".jsonl", ".json"))


def read_states(answers_path: str) -> dict:
  """{suite: its base state} kept beside the base's answers; {} when there is none or it does not read."""
  import json
  try:
    with open(_states_path(answers_path), encoding="utf-8") as f:
      states = json.load(f)
    return states if isinstance(states, dict) else {}
  except (OSError, ValueError):
    return {}


def read_answers(path: str) -> dict:
  """The base's answers kept in `path` ({(prompt ids, max_new_tokens, seed): Generated}); {} when there is none or
  it does not read (it is a cache: the answers are generated again)."""
  import json

  from itjax.model.generate import Generated
  if not os.path.exists(path):
    return {}
  kept = {}
  try:
    with open(path, encoding="utf-8") as f:
      for line in f:
        r = json.loads(line)
        kept[(tuple(r["prompt"]), r["max_new_tokens"], r["seed"])] = Generated(r["tokens"], r["finished"])
  except (OSError, ValueError, KeyError, TypeError):
    return {}
  return kept


def write_answers(path: str, answers: dict) -> None:
  import json

  from itjax.io import atomic
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  atomic.write_text(path, lambda f: f.writelines(
      json.dumps({"prompt": list(p), "max_new_tokens": n, "seed": s, "tokens": list(g.tokens),
                  "finished": g.finished}) + "\n" for (p, n, s), g in answers.items()))


def metric_lines(outputs: dict[str, SuiteOutput]) -> dict[str, float]:
  """{'eval/SUITE/METRIC': value} of the outputs: what training writes to metrics.jsonl."""
  return {f"eval/{suite}/{k}": v for suite, output in outputs.items() for k, v in output.metrics.items()}
