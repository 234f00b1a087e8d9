"""`itjax eval`: run suites on a model (and its base, side by side) and write the report.

  itjax eval --model SRC --suites ifeval,tasks,latency,forgetting,rigidity,hallucination,judge --out DIR
             [--base BASE|none] [--step N] [--data FILE] [--responses FILE] [--text FILE] [--text_bytes N]
             [--probes FILE] [--perturbations A,B] [--judge SRC] [--judge_mode relevance|pairwise]
             [--judge_template FILE] [--limit N] [--max_new_tokens N] [--batch_size N] [--seed S] [--json]

SRC is a HF directory, a .gguf file or a training workdir (its base + the LoRA of its latest checkpoint, or --step
N). A workdir's base is evaluated too unless --base none; --base SRC2 names a reference for any SRC.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

from itjax.errors import InputNotFound, UserError
from itjax.evals import registry, report
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Inputs, Sources, Suite

__all__ = ["Inputs", "check_out", "check_suites", "evaluate", "load_subjects", "run"]


def _is_workdir(src: str) -> bool:
  from itjax.io.workdir import exists, is_remote
  if is_remote(src):  # a training workdir in a bucket (models are read from local files)
    return exists(src, "checkpoints")
  hf = any(os.path.exists(os.path.join(src, f)) for f in ("model.safetensors", "model.safetensors.index.json"))
  return os.path.isdir(src) and not hf and any(
      os.path.exists(os.path.join(src, f)) for f in ("checkpoints", "metrics.jsonl", "tasks"))


def load_subjects(src: str, base: str | None, step: int | None,
                  unmerged: bool) -> tuple[dict[str, Subject], str | None]:
  """{'model', ['unmerged'], ['base']} subjects and the base's source. base None: a workdir's own base;
  'none': no reference."""
  from itjax.model import lora
  from itjax.interop.loading import load_model, load_trained
  subjects = {}
  if _check_source(src, step):
    from itjax.interop.checkpoint import lora_spec
    base_model, trained, meta = load_trained(src, step)
    template = meta["config"]["data"].get("chat_template") or None
    spec = lora_spec(meta)
    joined = lora.join(trained, base_model.params)
    config, merged = lora.merge_adapters(base_model.config.replace(lora=spec), joined)
    subjects["model"] = Subject("model", config, merged, base_model.tokenizer, template)
    if unmerged and spec is not None:
      subjects["unmerged"] = Subject("unmerged", base_model.config.replace(lora=spec), joined,
                                     base_model.tokenizer, template)
    if base is None:
      subjects["base"] = Subject("base", base_model.config, base_model.params, base_model.tokenizer, template)
      return subjects, meta["base"]["path"]
  else:
    loaded = load_model(src)
    subjects["model"] = Subject("model", loaded.config, loaded.params, loaded.tokenizer)
  if base and base != "none":
    ref = load_model(base)
    subjects["base"] = Subject("base", ref.config, ref.params, ref.tokenizer, subjects["model"].template)
    return subjects, base
  return subjects, None


def _check_source(src: str, step: int | None) -> bool:
  """Whether --model SRC is a training workdir; stops on one without checkpoints, and on --step without one."""
  if _is_workdir(src):
    from itjax.io.workdir import has_checkpoints
    if not has_checkpoints(src):
      raise InputNotFound(f"--model {src}: a training workdir without checkpoints (nothing in "
                          f"{os.path.join(src, 'checkpoints')})")
    return True
  if step is not None:
    raise UserError(f"--step needs a training workdir as --model, got {src}")
  return False


def _data_for(suites: Sequence[str], data: str | None) -> dict[str, str]:
  """--data FILE goes to the first suite that reads a file and runs (ifeval, before tasks), else to the task records
  (forgetting, rigidity and latency read them too); 'ifeval=FILE,tasks=FILE' names each."""
  if not data:
    return {}
  takers = [name for name in registry.names() if registry.get(name).data]
  if "=" in data:
    named = dict(part.split("=", 1) for part in data.split(","))
    unknown = set(named) - set(takers)
    if unknown:
      raise UserError(f"--data: unknown suite {sorted(unknown)} (SUITE=FILE takes {' or '.join(takers)})")
    return named
  return {next((name for name in takers if name in suites), "tasks"): data}


def check_suites(suites: Sequence[str]) -> list[str]:
  suites = [s.strip() for s in suites if s.strip()]
  known = registry.names()
  unknown = [s for s in suites if s not in known]
  if unknown or not suites:
    raise UserError(f"--suites: unknown suite {', '.join(map(repr, unknown)) or '(none given)'}; known: "
                    f"{', '.join(known)}")
  return suites


def _task_source(model: str | None, files: dict[str, str]) -> str | None:
  """The task records' file or directory: --data tasks=FILE, else a training workdir's tasks (fetched from a bucket
  workdir), else None (generated ones)."""
  if "tasks" in files or not model or not _is_workdir(model):
    return files.get("tasks")
  from itjax.io import workdir as workdir_lib
  if workdir_lib.is_remote(model) and workdir_lib.exists(model, "tasks"):
    workdir_lib.pull(model, "tasks")  # into this machine's mirror of the bucket workdir
  local = os.path.join(workdir_lib.local(model), "tasks")
  return local if os.path.isdir(local) else None


def _path(value) -> str | None:
  return os.fspath(value) if isinstance(value, (str, os.PathLike)) else None


def check_out(out: str, model=None, base=None, data=None, responses: str | None = None, inputs: Inputs = Inputs(),
              overwrite: bool = False) -> None:
  """--out DIR may be written: not an existing non-empty directory unless overwrite, never an input, a directory
  that holds one, or a place inside one (a training workdir's own files included)."""
  from itjax.io import outputs
  reads = [("--model", _path(model)), ("--base", None if base == "none" else _path(base))]
  reads += [("--data", path) for path in outputs.split(_path(data))]
  reads += [("--responses", responses), ("--text", inputs.text), ("--probes", inputs.probes),
            ("--judge", inputs.judge), ("--judge_template", inputs.judge_template)]
  outputs.check(os.fspath(out), "--out", reads=reads, overwrite=overwrite, directory=True)


def run(model: str | None, suites: Sequence[str], out: str, base: str | None = None, step: int | None = None,
        data: str | None = None, responses: str | None = None, settings: Settings = Settings(),
        inputs: Inputs = Inputs()) -> dict:
  """Runs the suites and writes DIR/results.json, report.md, SUITE.jsonl and SUITE.png; returns the results.
  DIR is the caller's to check first (`check_out`: `itjax eval` and `evaluate` do)."""
  suites = check_suites(suites)
  chosen = {name: registry.get(name) for name in suites}
  files = _data_for(suites, data)
  if responses and (len(suites) != 1 or not chosen[suites[0]].responses):
    takers = [name for name in registry.names() if registry.get(name).responses]
    raise UserError(f"--responses scores {' or '.join(takers)} responses: use it with --suites "
                    f"{' or '.join(takers)} alone")
  if not responses and not model:
    raise UserError("--model is required (a HF directory, a .gguf file or a training workdir)")
  given = model is not None and not isinstance(model, (str, os.PathLike))  # a loaded model, not a path
  if not responses and not given:
    _check_source(model, step)
  # Records first, so a bad file stops the run before any model loads.
  task_source = None if responses or given else _task_source(model, files)
  sources = Sources(settings, subset=settings.limit, seed=settings.seed,
                    data={**files, **({"tasks": task_source} if task_source else {})}, inputs=inputs)
  records = {name: suite.read(sources) for name, suite in chosen.items()}
  os.makedirs(out, exist_ok=True)
  results = {"model": _name(model) or responses, "base": None, "suites": {},
             "settings": {**dataclasses.asdict(settings), "suites": suites, "data": files or None,
                          "step": step, "responses": responses,
                          **{k: list(v) if isinstance(v, tuple) else v
                             for k, v in dataclasses.asdict(inputs).items() if v is not None}}}
  results["settings"].pop("progress")
  if responses:
    name = suites[0]
    _finish_suite(results, out, chosen[name], {"model": chosen[name].score(records[name], responses)})
    report.write_results(out, results)
    return results

  wanted = {role for suite in chosen.values() for role in suite.roles}
  if given:
    subjects = {"model": Subject("model", model.config, model.params, model.tokenizer)}
    if base is not None and not isinstance(base, (str, os.PathLike)):
      subjects["base"] = Subject("base", base.config, base.params, base.tokenizer)
    elif base not in (None, "none"):
      from itjax.interop.loading import load_model
      ref = load_model(os.fspath(base))
      subjects["base"] = Subject("base", ref.config, ref.params, ref.tokenizer)
    base_src = None if base in (None, "none") else _name(base)
  else:
    if base is not None and not isinstance(base, (str, os.PathLike)):
      raise UserError("a loaded base model goes with a loaded model; give both as paths or both loaded")
    subjects, base_src = load_subjects(model, base, step, unmerged="unmerged" in wanted)
  results["base"] = base_src
  if inputs.chat_template is not None:
    for subject in subjects.values():
      subject.template = inputs.chat_template
  for name, suite in chosen.items():
    outputs = suite.evaluate({role: s for role, s in subjects.items() if role in suite.roles}, records[name],
                             settings)
    _finish_suite(results, out, suite, outputs)
  report.write_results(out, results)
  return results


def _name(model) -> str | None:
  """How results.json names a model: its path, or a loaded model's source."""
  if model is None or isinstance(model, (str, os.PathLike)):
    return None if model is None else os.fspath(model)
  return getattr(model, "source", None) or "a model given in Python"


def evaluate(model, suites: Sequence[str], out: str | None = None, base=None, data=None,
             responses: str | None = None, step: int | None = None, limit: int | None = None,
             max_new_tokens: int = 256, batch_size: int = 16, seed: int = 0, overwrite: bool = False,
             **inputs) -> dict:
  """`run` for Python callers: `model` and `base` may be loaded models (itjax.load) as well as paths, `data` a list
  of records (dicts) as well as a file, `out` None a new temporary directory (an existing one is written over only
  with overwrite); `inputs` are Inputs' fields."""
  import tempfile

  from itjax.io import atomic
  out = os.fspath(out) if out else tempfile.mkdtemp(prefix="itjax-eval-")
  records = data is not None and not isinstance(data, (str, os.PathLike))
  kept = os.path.join(out, "data.jsonl")
  if records and not overwrite and os.path.exists(kept):  # the records of an earlier call: others are refused
    atomic.write_records(kept, data, "records", "another out directory")
  check_out(out, model, base, None if records else data, responses, Inputs(**inputs), overwrite)
  if records:  # kept beside the results they gave
    os.makedirs(out, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data)
    atomic.write_text(kept, lambda f: f.write(text))
    data = kept
  if model is not None and not isinstance(model, (str, os.PathLike)) and step is not None:
    raise UserError("step picks a checkpoint of a training workdir: give the workdir's path, not a loaded model")
  settings = Settings(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, limit=limit)
  return run(model, suites, out, base, step, None if data is None else os.fspath(data), responses, settings,
             Inputs(**inputs))


def _finish_suite(results: dict, out: str, suite: Suite, outputs: dict[str, SuiteOutput]) -> None:
  for output in outputs.values():
    suite.itemize(output)
  base = outputs["base"].metrics if "base" in outputs else None
  results["suites"][suite.name] = report.suite_result(outputs["model"].metrics, base)
  if outputs["model"].note:
    results["suites"][suite.name]["note"] = outputs["model"].note
  report.write_rows(out, suite.name, outputs)
  report.plot(out, suite.name, outputs, suite.unit)
