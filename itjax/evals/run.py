"""`itjax eval`: run suites on a model (and its base, side by side) and write the report.

  itjax eval --model SRC --suites ifeval,tasks,latency,forgetting,rigidity,hallucination --out DIR
             [--base BASE|none] [--step N] [--data FILE] [--responses FILE] [--text FILE] [--text_bytes N]
             [--probes FILE] [--perturbations A,B] [--limit N] [--max_new_tokens N] [--batch_size N] [--seed S]
             [--json]

SRC is a HF directory, a .gguf file or a training workdir (its base + the LoRA of its latest checkpoint, or --step
N). A workdir's base is evaluated too unless --base none; --base SRC2 names a reference for any SRC.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from itjax.errors import InputNotFound, UserError
from itjax.evals import SUITES, report
from itjax.evals.subject import Settings, Subject, SuiteOutput

UNITS = {"ifeval": "accuracy (%)", "tasks": "verified accuracy (%)", "latency": "tokens/s, tokens",
         "forgetting": "share of answers (%)", "rigidity": "verified accuracy (%)", "hallucination": "rate (%)"}


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What the suites read besides --data: the forgetting suite's text and probes, the rigidity suite's
  perturbations."""
  text: str | None = None  # None: the default general text (itjax.evals.text)
  text_bytes: int | None = None  # evaluate the text's first N bytes (cut at a line break); None: all of it
  probes: str | None = None  # JSONL of extra probes (prompt, answer)
  perturbations: tuple[str, ...] | None = None  # None: all


def _is_workdir(src: str) -> bool:
  from itjax.io.workdir import exists, is_remote
  if is_remote(src):  # a training workdir in a bucket (models are read from local files)
    return exists(src, "checkpoints")
  hf = any(os.path.exists(os.path.join(src, f)) for f in ("model.safetensors", "model.safetensors.index.json"))
  return os.path.isdir(src) and not hf and any(
      os.path.exists(os.path.join(src, f)) for f in ("checkpoints", "metrics.jsonl", "tasks"))


def load_subjects(src: str, base: str | None, step: int | None, unmerged: bool) -> tuple[dict[str, Subject], str | None]:
  """{'model', ['unmerged'], ['base']} subjects and the base's source. base None: a workdir's own base;
  'none': no reference."""
  from itjax.model import lora
  from itjax.interop.loading import load_model, load_trained
  subjects = {}
  if _is_workdir(src):
    from itjax.interop.checkpoint import lora_spec
    from itjax.io.workdir import has_checkpoints
    if not has_checkpoints(src):
      raise InputNotFound(f"--model {src}: a training workdir without checkpoints (nothing in "
                          f"{os.path.join(src, 'checkpoints')})")
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
    if step is not None:
      raise UserError(f"--step needs a training workdir as --model, got {src}")
    loaded = load_model(src)
    subjects["model"] = Subject("model", loaded.config, loaded.params, loaded.tokenizer)
  if base and base != "none":
    ref = load_model(base)
    subjects["base"] = Subject("base", ref.config, ref.params, ref.tokenizer, subjects["model"].template)
    return subjects, base
  return subjects, None


def _data_for(suites: Sequence[str], data: str | None) -> dict[str, str]:
  """--data FILE goes to ifeval when it runs, else to tasks; 'ifeval=FILE,tasks=FILE' names each."""
  if not data:
    return {}
  if "=" in data:
    named = dict(part.split("=", 1) for part in data.split(","))
    unknown = set(named) - {"ifeval", "tasks"}
    if unknown:
      raise UserError(f"--data: unknown suite {sorted(unknown)} (SUITE=FILE takes ifeval or tasks)")
    return named
  return {"ifeval" if "ifeval" in suites else "tasks": data}


def check_suites(suites: Sequence[str]) -> list[str]:
  suites = [s.strip() for s in suites if s.strip()]
  unknown = [s for s in suites if s not in SUITES]
  if unknown or not suites:
    raise UserError(f"--suites: unknown suite {', '.join(map(repr, unknown)) or '(none given)'}; known: "
                    f"{', '.join(SUITES)}")
  return suites


def run(model: str | None, suites: Sequence[str], out: str, base: str | None = None, step: int | None = None,
        data: str | None = None, responses: str | None = None, settings: Settings = Settings(),
        inputs: Inputs = Inputs()) -> dict:
  """Runs the suites and writes DIR/results.json, report.md, SUITE.jsonl and SUITE.png; returns the results."""
  from itjax.evals import degenerate, forgetting, hallucination, ifeval, latency, rigidity, tasks
  from itjax.evals import text as general_text
  suites = check_suites(suites)
  perturbations = rigidity.check_perturbations(inputs.perturbations) if "rigidity" in suites else None
  files = _data_for(suites, data)
  if "ifeval" in suites and "ifeval" not in files:
    raise UserError("--suites ifeval needs --data FILE: IFEval-format JSONL (key, prompt, instruction_id_list, "
                    "kwargs)")
  if responses and suites != ["ifeval"]:
    raise UserError("--responses scores IFEval responses: use it with --suites ifeval alone")
  if not responses and not model:
    raise UserError("--model is required (a HF directory, a .gguf file or a training workdir)")
  # Data first, so a bad file stops the run before any model loads.
  ifeval_records = ifeval.read_ifeval(files["ifeval"], settings.limit) if "ifeval" in files and (
      {"ifeval", "rigidity"} & set(suites)) else None
  text = probes = None
  if "forgetting" in suites:
    text = forgetting.read_text(inputs.text or general_text.default_path(), inputs.text_bytes)
    probes = forgetting.make_probes(min(settings.limit or forgetting.N_PROBES, forgetting.N_PROBES), settings.seed)
    probes += forgetting.read_probes(inputs.probes) if inputs.probes else []
  os.makedirs(out, exist_ok=True)
  results = {"model": model or responses, "base": None, "suites": {},
             "settings": {**dataclasses.asdict(settings), "suites": suites, "data": files or None,
                          "step": step, "responses": responses,
                          **{k: list(v) if isinstance(v, tuple) else v
                             for k, v in dataclasses.asdict(inputs).items() if v is not None}}}
  results["settings"].pop("progress")
  if responses:
    output = ifeval.output(ifeval_records, ifeval.read_responses(responses, ifeval_records))
    _finish_suite(results, out, "ifeval", {"model": output})
    report.write_results(out, results)
    return results

  subjects, base_src = load_subjects(model, base, step, unmerged="latency" in suites)
  results["base"] = base_src
  evaluated = {k: s for k, s in subjects.items() if k in ("model", "base")}
  task_source = files.get("tasks")
  if task_source is None and _is_workdir(model):
    from itjax.io import workdir as workdir_lib
    if workdir_lib.is_remote(model) and workdir_lib.exists(model, "tasks"):
      workdir_lib.pull(model, "tasks")  # into this machine's mirror of the bucket workdir
    if os.path.isdir(os.path.join(workdir_lib.local(model), "tasks")):
      task_source = os.path.join(workdir_lib.local(model), "tasks")
  needs_tasks = {"tasks", "forgetting", "rigidity"} & set(suites)
  task_records = tasks.load(task_source, settings.limit) if needs_tasks else None
  for suite in suites:
    if suite == "ifeval":
      outputs = {k: ifeval.evaluate(s, ifeval_records, settings) for k, s in evaluated.items()}
      degenerate.add_degeneration(outputs)
    elif suite == "tasks":
      outputs = {k: tasks.evaluate(s, task_records, settings) for k, s in evaluated.items()}
    elif suite == "forgetting":
      outputs = forgetting.evaluate(subjects["model"], subjects.get("base"), task_records, settings, text, probes)
    elif suite == "rigidity":
      outputs = {k: rigidity.evaluate(s, task_records, settings, perturbations, ifeval_records)
                 for k, s in evaluated.items()}
    elif suite == "hallucination":
      records = hallucination.load(settings.limit or hallucination.N_QUESTIONS, settings.seed)
      outputs = {k: hallucination.evaluate(s, records, settings) for k, s in evaluated.items()}
    else:
      if ifeval_records is not None:
        chats = [[{"role": "user", "content": r["prompt"]}] for r in ifeval_records]
      else:
        chats = [[m for m in r["messages"] if m["role"] != "assistant"]
                 for r in (task_records or tasks.load(task_source))]
      chats = chats[:settings.limit or latency.BATCH]
      variants = {"base": subjects["base"]} if "base" in subjects else {}
      variants.update({("merged" if k == "model" else k): s for k, s in subjects.items() if k != "base"})
      outputs = latency.evaluate(variants, chats, settings)
      outputs = {"model": _latency_model(outputs), **({"base": outputs["base"]} if "base" in outputs else {})}
    _finish_suite(results, out, suite, outputs)
  report.write_results(out, results)
  return results


def _latency_model(outputs: dict[str, SuiteOutput]) -> SuiteOutput:
  """The tuned model's latency figures (merged), with the unmerged variant's beside them as unmerged/METRIC."""
  merged = outputs["merged"]
  if "unmerged" in outputs:
    merged.metrics.update({f"unmerged/{k}": v for k, v in outputs["unmerged"].metrics.items()})
    merged.rows += [{**r, "variant": "unmerged"} for r in outputs["unmerged"].rows]
  return merged


def _finish_suite(results: dict, out: str, suite: str, outputs: dict[str, SuiteOutput]) -> None:
  base = outputs["base"].metrics if "base" in outputs else None
  results["suites"][suite] = report.suite_result(outputs["model"].metrics, base)
  if outputs["model"].note:
    results["suites"][suite]["note"] = outputs["model"].note
  report.write_rows(out, suite, outputs)
  report.plot(out, suite, outputs, UNITS[suite])
