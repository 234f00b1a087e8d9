"""`itjax inspect-data` (what a model would be trained on) and `itjax make-tasks` (generated verifiable tasks)."""

from __future__ import annotations

import json
import sys

from absl import flags

from itjax.cli import common
from itjax.cli.common import Alias, Command
from itjax.errors import UserError
from itjax.io import outputs


def define_inspect_data(fv: flags.FlagValues) -> None:
  common.data(fv, "Data files, comma-separated, each optionally PATH:WEIGHT.")
  common.model(fv, "The model whose tokenizer and chat template are used: a Hugging Face model directory or a .gguf "
               "file.")
  flags.DEFINE_integer("max_len", 2048, "Token slots per packed row; longer examples follow --length_policy.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_enum("length_policy", "truncate", ["truncate", "drop"], "Examples longer than max_len: cut the "
                    "response (the prompt is kept) or drop them; either way they are counted.", flag_values=fv)
  flags.DEFINE_enum("train_on", "all", ["all", "last"], "Train on every assistant turn or only the last one.",
                    flag_values=fv)
  flags.DEFINE_string("data_format", None, "The data format (alpaca, messages, sharegpt, prompt_completion, text; "
                      "default: detected per file).", flag_values=fv)
  common.chat_template(fv)
  flags.DEFINE_integer("show", 0, "Print this many examples with the trained tokens marked.", lower_bound=0,
                       flag_values=fv)
  common.json_flag(fv)


def cmd_inspect_data(f: flags.FlagValues, args: list[str]) -> None:
  from itjax.data import dataset, inspect
  from itjax.interop.loading import load_tokenizer
  if not f.data or not f.model:
    raise UserError("--data FILE[,FILE...] and --model SRC (whose tokenizer and chat template are used) are "
                    "required")
  tokenizer = load_tokenizer(f.model)
  options = dataset.Options(max_len=f.max_len, length_policy=f.length_policy, train_on=f.train_on,
                            template=f.chat_template, format=f.data_format)
  report, examples = inspect.inspect(f.data, tokenizer, options)
  if f.json:
    print(json.dumps({**report.summary(), "problems": report.problems}, ensure_ascii=False))
  else:
    print(inspect.human_summary(f.data, report, f.max_len))
  shown = sys.stderr if f.json else sys.stdout
  for i, (ids, mask) in enumerate(examples[:f.show]):
    print(f"\n--- example {i + 1} ({len(ids)} tokens, {int(mask.sum())} trained, "
          f"between {inspect.OPEN} {inspect.CLOSE}) ---", file=shown)
    print(inspect.mark_trained(tokenizer, ids, mask), file=shown)


def define_make_tasks(fv: flags.FlagValues) -> None:
  common.out(fv, "Output directory: train.jsonl, validation.jsonl, heldout.jsonl.")
  common.overwrite(fv, "--out directory's files (a non-empty directory is refused without it)")
  flags.DEFINE_integer("n", 2000, "Training examples to generate (validation and held-out get n/10 each).",
                       lower_bound=1, flag_values=fv)
  common.seed(fv, "Generation seed.")
  flags.DEFINE_string("holdout", None, "Task types or groups kept out of training, comma-separated "
                      "(default: the generator's held-out set).", flag_values=fv)
  flags.DEFINE_enum("phrasings", "one", ["one", "all"], "Say every constraint in its first wording ('one') or in "
                    "any of its wordings ('all').", flag_values=fv)
  flags.DEFINE_enum("eval_phrasings", None, ["one", "all"], "The validation and held-out splits' wordings "
                    "(default: --phrasings).", flag_values=fv)
  flags.DEFINE_enum("train_format", "instruction", ["instruction", "task_name"], "The train split's prompts: "
                    "natural-language instructions, or the task's type names and its input (a multi-task format).",
                    flag_values=fv)
  flags.DEFINE_integer("n_eval", 0, "Validation and held-out examples each (0: n/10).", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_integer("grounded", 0, "Grounded questions added to the train split, held out or not.",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_float("grounded_unanswerable", 0.5, "The share of those that are unanswerable (answered with an "
                     "abstention).", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
  flags.DEFINE_float("noise", 0.0, "Share of train records given a response their verifier rejects (exactly that "
                     "share; the record's 'noise' field names the kind).", lower_bound=0.0, upper_bound=1.0,
                     flag_values=fv)
  flags.DEFINE_string("noise_kinds", "wrong_answer,broken_format,truncated", "The kinds of noise, taking turns.",
                      flag_values=fv)


def cmd_make_tasks(f: flags.FlagValues, args: list[str]) -> None:
  from itjax.data import tasks
  if not f.out:
    raise UserError("--out DIR is required")
  outputs.check(f.out, "--out", directory=True, overwrite=f.overwrite)
  holdout = tasks.DEFAULT_HOLDOUT if f.holdout is None else f.holdout
  paths = tasks.write_splits(f.out, f.n, f.seed, holdout, phrasings=f.phrasings, eval_phrasings=f.eval_phrasings,
                             train_format=f.train_format, noise=f.noise, noise_kinds=f.noise_kinds,
                             n_eval=f.n_eval, n_grounded=f.grounded, grounded_unanswerable=f.grounded_unanswerable)
  for split, path in paths.items():
    print(f"{split}: {path}")


COMMANDS = (
    Command("inspect-data", "what a model would be trained on, record by record: counts, problems, packing",
            "--data FILE[:WEIGHT][,FILE...] --model SRC [--max_len N] [--show K] [--json]\n"
            "[--train_on all|last] [--length_policy truncate|drop] [--data_format F] [--chat_template T]",
            define_inspect_data, cmd_inspect_data, aliases=(Alias("format", "data_format", deprecated=True),)),
    Command("make-tasks", "generated verifiable tasks: train, validation and held-out JSONL",
            "--out DIR [--n N] [--seed S] [--holdout TYPES] [--phrasings one|all] [--overwrite]", define_make_tasks,
            cmd_make_tasks),
)
