"""`itjax eval`: evaluation suites on a saved model, a training workdir, or given responses."""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from itjax.cli import common
from itjax.cli.common import Command
from itjax.errors import UserError


def define(fv: flags.FlagValues) -> None:
  common.model(fv, "A Hugging Face model directory, a .gguf file or a training workdir.")
  flags.DEFINE_list("suites", ["tasks"], "Suites to run, comma-separated (ifeval, tasks, latency, forgetting, "
                    "rigidity, hallucination, judge).", flag_values=fv)
  common.out(fv, "Output directory: results.json, report.md, per-example JSONL and plots.")
  common.overwrite(fv, "--out directory (a non-empty one is refused without it)")
  flags.DEFINE_string("base", None, "A reference model evaluated beside --model ('none': no reference; default: a "
                      "workdir's own base).", flag_values=fv)
  flags.DEFINE_integer("step", None, "The checkpoint step of a workdir --model (default: the latest).",
                       flag_values=fv)
  common.data(fv, "A data file for ifeval when it runs, else for tasks; or ifeval=FILE,tasks=FILE (ifeval needs "
              "one).")
  flags.DEFINE_string("responses", None, "JSONL of responses (key or prompt, and response) to score without a model "
                      "(--suites ifeval).", flag_values=fv)
  flags.DEFINE_string("text", None, "forgetting: a UTF-8 text for perplexity and bits per byte (default: the bundled "
                      "public-domain prose, see the README).", flag_values=fv)
  flags.DEFINE_integer("text_bytes", None, "forgetting: score only the text's first N bytes (cut at a line break).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_string("probes", None, "forgetting: JSONL of extra retention probes, each with 'prompt' and 'answer'.",
                      flag_values=fv)
  flags.DEFINE_list("perturbations", None, "rigidity: perturbations to apply (default: all of typos_2, typos_5, case, "
                    "whitespace, reworded, reordered, system, plain_template).", flag_values=fv)
  flags.DEFINE_string("judge", None, "judge: the judge model (default: the base; pairwise needs one, "
                      "instruction-tuned).", flag_values=fv)
  flags.DEFINE_enum("judge_mode", "relevance", ["relevance", "pairwise"], "judge: relevance (how much the prompt "
                    "explains each answer) or pairwise (the judge picks A or B, in both orders).", flag_values=fv)
  flags.DEFINE_string("judge_template", None, "judge, pairwise: a template with {question}, {answer_a} and "
                      "{answer_b} (default: itjax/evals/judge_pairwise.txt).", flag_values=fv)
  common.chat_template(fv, " 'none': each prompt as plain text after BOS (a base model); default: a workdir's own, "
                       "else the tokenizer's.")
  common.limit(fv, "Examples per suite (per split for tasks).")
  common.max_new_tokens(fv, 256)
  common.batch_size(fv, 16)
  common.seed(fv)
  common.json_flag(fv)


def cmd_eval(f: flags.FlagValues, args: list[str]) -> None:
  import signal

  from itjax.evals.run import Inputs, check_out
  from itjax.evals.run import run as run_eval
  from itjax.evals.subject import Settings
  if not f.out:
    raise UserError("--out DIR is required")
  # SIGTERM unwinds like Ctrl-C: files are written whole (temp file + rename) or not at all.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  settings = Settings(max_new_tokens=f.max_new_tokens, batch_size=f.batch_size, seed=f.seed, limit=f.limit)
  inputs = Inputs(text=f.text, text_bytes=f.text_bytes, probes=f.probes,
                  perturbations=tuple(f.perturbations) if f.perturbations is not None else None, judge=f.judge,
                  judge_mode=None if f.judge_mode == "relevance" else f.judge_mode, judge_template=f.judge_template,
                  chat_template=f.chat_template)
  check_out(f.out, f.model, f.base, f.data, f.responses, inputs, f.overwrite)  # before any input is read
  results = run_eval(f.model, f.suites, f.out, f.base, f.step, f.data, f.responses, settings, inputs)
  if f.json:
    print(json.dumps(results, ensure_ascii=False))
  else:
    from itjax.evals.report import markdown
    print(markdown(results))
  print(f"wrote {os.path.join(f.out, 'results.json')}, report.md and per-example JSONL", file=sys.stderr)


COMMANDS = (
    Command("eval", "evaluation suites (ifeval, tasks, latency, forgetting, rigidity, hallucination, judge) into a "
            "report",
            "--model SRC --suites ifeval,tasks,latency,forgetting,rigidity,hallucination,judge --out DIR\n"
            "[--base BASE|none] [--step N] [--data FILE] [--responses FILE] [--text FILE] [--text_bytes N]\n"
            "[--probes FILE] [--perturbations A,B] [--judge SRC] [--judge_mode relevance|pairwise]\n"
            "[--judge_template FILE] [--chat_template NAME|none] [--limit N] [--max_new_tokens N] [--batch_size N]\n"
            "[--seed S] [--json] [--overwrite]",
            define, cmd_eval, no_template=True),
)
