"""`itjax curate` (fewer, cleaner records: filters, dedup, decontamination, selection) and `itjax distill`
(self-distillation rewrites of responses, and self-replay answers)."""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from itjax.cli import common
from itjax.cli.common import Command
from itjax.errors import UserError


def define_curate(fv: flags.FlagValues) -> None:
  common.data(fv, "Input JSONL files, comma-separated.")
  common.out(fv, "The output JSONL file (the removed records go beside it).")
  common.overwrite(fv, "--out (and its removed records, and --report's files)")
  common.model(fv, "The model to be tuned (a Hugging Face model directory, a .gguf file or a training workdir): its "
               "chat template for --max_tokens, its scores and embeddings for --by quality|diversity.")
  flags.DEFINE_list("dedup", ["exact", "near"], "Duplicate removal, a subset of exact,near ('' for none).",
                    flag_values=fv)
  flags.DEFINE_float("near_threshold", 0.8, "Word-shingle Jaccard at or above which a record is a near duplicate of "
                     "an earlier one.", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
  flags.DEFINE_list("decontaminate", [], "Eval JSONL files whose prompts' n-grams a record may not share.",
                    flag_values=fv)
  flags.DEFINE_integer("ngram", 13, "Words per n-gram for --decontaminate.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("min_chars", 0, "Drop records with an assistant turn shorter than this (characters).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("max_tokens", None, "Drop conversations longer than this under --model's chat template.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("select", None, "Keep this many of the remaining records (see --by).", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_enum("by", "random", ["random", "quality", "diversity"], "How --select chooses: random (seeded by "
                    "--seed), quality (highest instruction-following difficulty below 1) or diversity (k-center "
                    "greedy over the model's embeddings); the last two need --model.", flag_values=fv)
  flags.DEFINE_string("report", None, "A directory for report.md and before/after plots.", flag_values=fv)
  common.seed(fv, "Seed of MinHash and of --select.")
  common.chat_template(fv)
  common.json_flag(fv)


def cmd_curate(f: flags.FlagValues, args: list[str]) -> None:
  from itjax.curate.curate import Options, check_outputs, counts_text, curate, removed_path
  if not f.data or not f.out:
    raise UserError("--data IN[,IN2...] and --out OUT.jsonl are required")
  inputs = [p for p in f.data.split(",") if p]
  options = Options(dedup=tuple(f.dedup), near_threshold=f.near_threshold, decontaminate=tuple(f.decontaminate),
                    ngram=f.ngram, min_chars=f.min_chars, max_tokens=f.max_tokens, select=f.select, by=f.by,
                    seed=f.seed, template=f.chat_template)
  check_outputs(inputs, f.out, options, f.model, f.report, f.overwrite)  # before any model loads
  tokenizer = model = None
  if f.model and f.select is not None and f.by != "random":
    from itjax.interop.loading import load_model
    model = load_model(f.model)
  elif f.model:
    from itjax.interop.loading import load_tokenizer
    tokenizer = load_tokenizer(f.model)
  curated = curate(inputs, f.out, options, tokenizer, model)
  for note in curated.notes:
    print(f"itjax curate: {note}", file=sys.stderr)
  summary = curated.summary()
  if f.report:
    from itjax.curate.report import write_report
    print(f"wrote {write_report(f.report, curated, inputs, f.out)} and plots", file=sys.stderr)
  if f.json:
    print(json.dumps(summary))
  else:
    print(f"records {summary['records']}, kept {summary['kept']}; removed: {counts_text(summary['removed'])}")
  print(f"wrote {f.out} and {removed_path(f.out)}", file=sys.stderr)


def define_distill(fv: flags.FlagValues) -> None:
  common.model(fv, "The model that rewrites or answers (a Hugging Face model directory, a .gguf file or a training "
               "workdir).")
  common.data(fv, "Input JSONL whose responses are rewritten.")
  common.out(fv, "The output JSONL file (a summary goes beside it).")
  common.overwrite(fv, "--out and start over (one made from the same inputs and settings is continued without it)")
  flags.DEFINE_string("template", "general", "How the model is asked to rewrite a response: general, refer, math, "
                      "or a Jinja file (given instruction, reference and messages). Not a chat template.",
                      flag_values=fv)
  flags.DEFINE_enum("check", "none", ["none", "tasks", "last_number"], "Reject rewrites that fail the record's task "
                    "verifier (tasks) or whose last number differs from the reference's (last_number).",
                    flag_values=fv)
  flags.DEFINE_bool("self", False, "Answer --prompts with the model itself (self-replay), no reference.",
                    flag_values=fv)
  flags.DEFINE_string("prompts", None, "With --self: a JSONL file with 'prompt' per line, or 'general' for the "
                      "built-in general prompts.", flag_values=fv)
  common.batch_size(fv, 8)
  common.max_new_tokens(fv, 512)
  common.limit(fv, "Only the first N records or prompts.")
  common.chat_template(fv)
  common.seed(fv)
  common.dtype(fv)
  common.json_flag(fv)


def cmd_distill(f: flags.FlagValues, args: list[str]) -> None:
  from itjax.curate.curate import counts_text
  from itjax.curate.distill import Options, check_out, distill, fingerprint, self_replay, summary_path
  from itjax.interop.loading import load_model
  replay = f["self"].value
  if not f.model or not f.out:
    raise UserError("--model SRC and --out OUT.jsonl are required")
  if replay != bool(f.prompts) or replay == bool(f.data):
    raise UserError("give --data IN.jsonl (rewrite its responses) or --self --prompts FILE|general (self-replay)")
  options = Options(template=f.template, check=f.check, batch_size=f.batch_size, max_new_tokens=f.max_new_tokens,
                    limit=f.limit, chat_template=f.chat_template, seed=f.seed)
  if not replay:
    from itjax.curate.distill import load_template, read_rewritable
    load_template(options.template)  # bad input stops before the model loads
    read_rewritable(f.data, options)
  else:
    from itjax.curate.distill import read_self_prompts
    read_self_prompts(f.prompts, options)
  source = f.prompts if replay else f.data
  recorded = fingerprint(source, f.model, options, replay, f.dtype)
  reads = [("--prompts" if replay else "--data", None if source == "general" else source), ("--model", f.model),
           ("--template", None if replay or not os.path.isfile(f.template) else f.template)]
  check_out(f.out, recorded, reads, f.overwrite)  # before the model loads
  model = load_model(f.model, dtype=f.dtype)
  if replay:
    summary = self_replay(f.prompts, f.out, model, options, f.overwrite, recorded)
  else:
    summary = distill(f.data, f.out, model, options, f.overwrite, recorded)
  if f.json:
    print(json.dumps(summary))
  else:
    print(f"records {summary['records']}, accepted {summary['accepted']}; rejected: "
          f"{counts_text(summary['rejected_by_reason'])}")
  print(f"wrote {f.out} and {summary_path(f.out)}", file=sys.stderr)


COMMANDS = (
    Command("curate", "instruction data in, fewer records out: filters, exact and near dedup, decontamination, "
            "selection",
            "--data IN[,IN2...] --out OUT.jsonl [--model SRC] [--dedup exact,near] [--near_threshold 0.8]\n"
            "[--decontaminate EVAL[,EVAL2...]] [--ngram 13] [--min_chars N] [--max_tokens N]\n"
            "[--select N] [--by random|quality|diversity] [--report DIR] [--seed S] [--chat_template T] [--json]\n"
            "[--overwrite]",
            define_curate, cmd_curate),
    Command("distill", "self-distillation: a model rewrites data's responses, or answers prompts (self-replay)",
            "--model SRC --data IN.jsonl --out OUT.jsonl [--template general|refer|math|FILE]\n"
            "[--check none|tasks|last_number] [--batch_size N] [--max_new_tokens N] [--limit N]\n"
            "[--chat_template T] [--seed S] [--dtype float32|bfloat16] [--json] [--overwrite]\n"
            "(re-run to resume)\n"
            "itjax distill --model SRC --self --prompts FILE|general --out OUT.jsonl [--limit N] [--seed S]",
            define_distill, cmd_distill),
)
