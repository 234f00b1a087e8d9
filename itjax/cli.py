"""The `itjax` command line: `itjax COMMAND [--flags]`.

  itjax generate --model SRC (--prompt TEXT | --prompts_file IN.jsonl --output OUT.jsonl) [--max_new_tokens N]
                 [--temperature T] [--top_p P] [--top_k K] [--batch_size B] [--seed S] [--raw] [--stop STR ...]
  itjax fetch-demo-model            prints the path of the SmolLM2-135M-Instruct GGUF (fetched once, cached)
  itjax demo [--workdir runs/demo]  LoRA-tunes SmolLM2-135M-Instruct on generated tasks; before/after figures
  itjax inspect-data --data FILE[:WEIGHT][,FILE...] --model SRC [--max_len N] [--show K] [--json]
                     [--train_on all|last] [--length_policy truncate|drop] [--format F] [--chat_template T]
  itjax make-tasks --out DIR [--n N] [--seed S] [--holdout TYPES] [--phrasings one|all]
  itjax train --config configs/X.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]   (re-run to resume)
  itjax export --workdir DIR --format hf|peft --out OUT [--step N] [--dtype float32|bfloat16] [--overwrite]
  itjax eval --model SRC --suites ifeval,tasks,latency,forgetting,rigidity,hallucination --out DIR [--base BASE|none]
             [--step N] [--data FILE] [--responses FILE] [--text FILE] [--text_bytes N] [--probes FILE]
             [--perturbations A,B] [--limit N] [--max_new_tokens N] [--batch_size N] [--seed S] [--json]
  itjax curate --data IN[,IN2...] --out OUT.jsonl [--model SRC] [--dedup exact,near] [--near_threshold 0.8]
               [--decontaminate EVAL[,EVAL2...]] [--ngram 13] [--min_chars N] [--max_tokens N]
               [--select N] [--by random] [--report DIR] [--seed S] [--json]
  itjax distill --model SRC --data IN.jsonl --out OUT.jsonl [--template general|refer|math|FILE]
                [--check none|tasks|last_number] [--batch_size N] [--max_new_tokens N] [--limit N]   (re-run to resume)
  itjax distill --model SRC --self --prompts FILE|general --out OUT.jsonl [--limit N] [--seed S]
  itjax sweep experiments/NAME.py [--dry_run] [--only RUN[,RUN]] [--launcher local|tpu] [--parallel N]
              [--runs_dir runs] [--tpu NAME --zone ZONE [--project P]]      (re-run to go on; finished runs are skipped)
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from itjax.data.chat import resolve as resolve_template
from itjax.errors import CheckpointNotWritten, UserError

COMMANDS = ("generate", "fetch-demo-model", "demo", "inspect-data", "make-tasks", "train", "export", "eval",
            "curate", "distill", "sweep")

flags.DEFINE_string("model", None, "A Hugging Face model directory or a .gguf file (eval: or a training workdir).")
flags.DEFINE_string("prompt", None, "One prompt, rendered as a user turn (raw text with --raw).")
flags.DEFINE_string("prompts_file", None, "JSONL: each line has 'prompt' (a string) or 'messages' (a chat list).")
flags.DEFINE_string("output", None, "JSONL written with each input line's fields plus 'response'.")
flags.DEFINE_integer("max_new_tokens", 128, "Tokens generated at most per prompt (eval: default 256).",
                     lower_bound=1)
flags.DEFINE_float("temperature", 0.0, "0 is greedy.", lower_bound=0.0)
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1 = off).")
flags.DEFINE_integer("top_k", 0, "Keep only the k most likely tokens (0 = off).", lower_bound=0)
flags.DEFINE_integer("batch_size", 8, "Prompts decoded at once (slots; a finished one takes the next prompt). "
                     "eval: default 16.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Sampling seed (curate: MinHash and --select).")
flags.DEFINE_bool("raw", False, "Do not apply the chat template: the prompt text is the model input.")
flags.DEFINE_multi_string("stop", [], "Stop strings: a response is cut at the first one (repeatable).")
flags.DEFINE_string("chat_template", None, "A built-in template name (chatml, llama3, alpaca) instead of the "
                    "tokenizer's own.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_bool("echo", False, "Also print each prompt and response.")
flags.DEFINE_string("data", None, "Data files, comma-separated, each optionally PATH:WEIGHT.")
flags.DEFINE_integer("max_len", 2048, "Token slots per packed row; longer examples follow --length_policy.",
                     lower_bound=1)
flags.DEFINE_enum("length_policy", "truncate", ["truncate", "drop"], "Examples longer than max_len: cut the "
                  "response (the prompt is kept) or drop them; either way they are counted.")
flags.DEFINE_enum("train_on", "all", ["all", "last"], "Train on every assistant turn or only the last one.")
flags.DEFINE_string("format", None, "inspect-data: the data format (alpaca, messages, sharegpt, "
                    "prompt_completion, text; default: detected per file). export: hf or peft.")
flags.DEFINE_integer("step", None, "export: the checkpoint step (default: the latest).")
flags.DEFINE_bool("overwrite", False, "export: replace an existing --out directory.")
flags.DEFINE_integer("show", 0, "Print this many examples with the trained tokens marked.", lower_bound=0)
flags.DEFINE_bool("json", False, "Print the summary as one JSON object.")
flags.DEFINE_string("out", None, "Output directory (curate: the output JSONL file).")
flags.DEFINE_integer("n", 2000, "Training examples to generate (validation and held-out get n/10 each).",
                     lower_bound=1)
flags.DEFINE_string("holdout", None, "Task types or groups kept out of training, comma-separated "
                    "(default: the generator's held-out set).")
flags.DEFINE_enum("phrasings", "one", ["one", "all"], "make-tasks: say every constraint in its first wording "
                  "('one') or in any of its wordings ('all').")
flags.DEFINE_list("suites", ["tasks"], "eval: suites to run, comma-separated (ifeval, tasks, latency, forgetting, "
                  "rigidity, hallucination).")
flags.DEFINE_string("text", None, "eval forgetting: a UTF-8 text for perplexity and bits per byte (default: the "
                    "bundled public-domain prose, see the README).")
flags.DEFINE_integer("text_bytes", None, "eval forgetting: score only the text's first N bytes (cut at a line "
                     "break).", lower_bound=1)
flags.DEFINE_string("probes", None, "eval forgetting: JSONL of extra retention probes, each with 'prompt' and "
                    "'answer'.")
flags.DEFINE_list("perturbations", None, "eval rigidity: perturbations to apply (default: all of typos_2, typos_5, "
                  "case, whitespace, reworded, reordered, system, plain_template).")
flags.DEFINE_string("base", None, "eval: a reference model evaluated beside --model ('none': no reference; default: "
                    "a workdir's own base).")
flags.DEFINE_string("responses", None, "eval: JSONL of responses (key or prompt, and response) to score without a "
                    "model (--suites ifeval).")
flags.DEFINE_integer("limit", None, "eval: examples per suite (per split for tasks). distill: the first N records "
                     "or prompts.", lower_bound=1)
flags.DEFINE_list("dedup", ["exact", "near"], "curate: duplicate removal, a subset of exact,near ('' for none).")
flags.DEFINE_float("near_threshold", 0.8, "curate: word-shingle Jaccard at or above which a record is a near "
                   "duplicate of an earlier one.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_list("decontaminate", [], "curate: eval JSONL files whose prompts' n-grams a record may not share.")
flags.DEFINE_integer("ngram", 13, "curate: words per n-gram for --decontaminate.", lower_bound=1)
flags.DEFINE_integer("min_chars", 0, "curate: drop records with an assistant turn shorter than this (characters).",
                     lower_bound=0)
flags.DEFINE_integer("max_tokens", None, "curate: drop conversations longer than this under --model's chat "
                     "template.", lower_bound=1)
flags.DEFINE_integer("select", None, "curate: keep this many of the remaining records (see --by).", lower_bound=1)
flags.DEFINE_enum("by", "random", ["random", "quality", "diversity"], "curate: how --select chooses: random "
                  "(seeded by --seed), quality (highest instruction-following difficulty below 1) or diversity "
                  "(k-center greedy over the model's embeddings); the last two need --model.")
flags.DEFINE_string("report", None, "curate: a directory for report.md and before/after plots.")
flags.DEFINE_string("template", "general", "distill: how the model is asked to rewrite a response: general, "
                    "refer, math, or a Jinja file (given instruction, reference and messages).")
flags.DEFINE_enum("check", "none", ["none", "tasks", "last_number"], "distill: reject rewrites that fail the "
                  "record's task verifier (tasks) or whose last number differs from the reference's (last_number).")
flags.DEFINE_bool("self", False, "distill: answer --prompts with the model itself (self-replay), no reference.")
flags.DEFINE_string("prompts", None, "distill --self: a JSONL file with 'prompt' per line, or 'general' for the "
                    "built-in general prompts.")
flags.DEFINE_string("coordinator_address", "", "train: HOST:PORT of process 0 when several processes run one job "
                    "(also --num_processes and --process_id; TPU slices, SLURM and JAX_COORDINATOR_ADDRESS need none).")
flags.DEFINE_integer("num_processes", 0, "train: how many processes run the job (with --coordinator_address).",
                     lower_bound=0)
flags.DEFINE_integer("process_id", -1, "train: this process's index, 0..num_processes-1 (with --coordinator_address).")
flags.DEFINE_bool("dry_run", False, "sweep: print the planned runs, their overrides and commands; run nothing.")
flags.DEFINE_list("only", None, "sweep: run only these runs of the experiment, comma-separated.")
flags.DEFINE_enum("launcher", "local", ["local", "tpu"], "sweep: run here, one after another (local), or on a TPU "
                  "slice made by launch/tpu.py create (tpu, with --tpu and --zone).")
flags.DEFINE_integer("parallel", 1, "sweep: local runs at once.", lower_bound=1)
flags.DEFINE_string("runs_dir", "runs", "sweep: runs go to RUNS_DIR/NAME/RUN (a gs:// path on a slice).")
flags.DEFINE_string("tpu", None, "sweep --launcher tpu: the slice's name (launch/tpu.py create --name).")
flags.DEFINE_string("zone", None, "sweep --launcher tpu: the slice's zone.")
flags.DEFINE_string("project", None, "sweep --launcher tpu: the Google Cloud project (default: gcloud's).")
config_flags.DEFINE_config_file("config", None, "A training config file (configs/*.py[:ARG]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Training directory: checkpoints, metrics.jsonl, TensorBoard events, plots.")
FLAGS = flags.FLAGS


UsageError = UserError  # a wrong or missing flag


def _prompt_ids(tokenizer, record: dict, raw: bool, template: str | None, where: str) -> list[int]:
  from itjax.data.prompts import record_messages
  if raw:
    if "prompt" not in record:
      raise UsageError(f"{where}: --raw needs a 'prompt' string, not 'messages'")
    return tokenizer.encode(record["prompt"])
  return tokenizer.encode_chat(record_messages(record), add_generation_prompt=True, template=template)


def cmd_generate() -> None:
  from itjax.model.generate import Generator, Sampling, generate_texts
  from itjax.interop.loading import load_model
  from itjax.data.prompts import read_prompts, record_messages

  if not FLAGS.model:
    raise UsageError("--model is required (a Hugging Face model directory or a .gguf file)")
  if (FLAGS.prompt is None) == (FLAGS.prompts_file is None):
    raise UsageError("give exactly one of --prompt TEXT or --prompts_file IN.jsonl")
  if FLAGS.prompts_file and not FLAGS.output:
    raise UsageError("--prompts_file needs --output OUT.jsonl")
  sampling = Sampling(FLAGS.temperature, FLAGS.top_k, FLAGS.top_p)
  records = [{"prompt": FLAGS.prompt}] if FLAGS.prompt is not None else read_prompts(FLAGS.prompts_file)
  source = FLAGS.prompts_file or "--prompt"

  t = time.time()
  loaded = load_model(FLAGS.model, dtype=FLAGS.dtype)
  tok = loaded.tokenizer
  print(f"loaded {FLAGS.model} ({loaded.config.num_params / 1e6:.1f}M params) in {time.time() - t:.1f}s",
        file=sys.stderr)
  ids = [_prompt_ids(tok, r, FLAGS.raw, FLAGS.chat_template, f"{source}:{i + 1}") for i, r in enumerate(records)]
  generator = Generator(loaded.config, loaded.params, tok.eos_ids, tok.pad_id)
  responses = generate_texts(generator, tok, ids, FLAGS.max_new_tokens, sampling, FLAGS.batch_size, FLAGS.seed,
                             FLAGS.stop)
  if FLAGS.prompt is not None:
    print(responses[0])
    return
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  tmp = FLAGS.output + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for record, response in zip(records, responses):
      f.write(json.dumps({**record, "response": response}, ensure_ascii=False) + "\n")
  os.replace(tmp, FLAGS.output)
  if FLAGS.echo:
    for record, response in zip(records, responses):
      print(f"\n>>> {record_messages(record)[-1]['content']}\n{response}")
  print(f"\nwrote {len(records)} responses to {FLAGS.output}", file=sys.stderr)


def cmd_fetch_demo_model() -> None:
  from itjax.io import demo_model
  print(demo_model.fetch())


def cmd_demo() -> None:
  """LoRA-tunes SmolLM2-135M-Instruct on generated tasks (configs/smollm2_135m_lora.py) and shows before/after."""
  from itjax.demo import load_config, run_demo
  config = FLAGS.config if FLAGS.config is not None else load_config()
  run_demo(FLAGS.workdir or os.path.join("runs", "demo"), config)


def cmd_inspect_data() -> None:
  from itjax.data import dataset, inspect
  from itjax.interop.loading import load_tokenizer
  if not FLAGS.data or not FLAGS.model:
    raise UsageError("--data FILE[,FILE...] and --model SRC (whose tokenizer and chat template are used) are "
                     "required")
  tokenizer = load_tokenizer(FLAGS.model)
  options = dataset.Options(max_len=FLAGS.max_len, length_policy=FLAGS.length_policy, train_on=FLAGS.train_on,
                            template=FLAGS.chat_template, format=FLAGS.format)
  report, examples = inspect.inspect(FLAGS.data, tokenizer, options)
  if FLAGS.json:
    print(json.dumps({**report.summary(), "problems": report.problems}, ensure_ascii=False))
  else:
    print(inspect.human_summary(FLAGS.data, report, FLAGS.max_len))
  for i, (ids, mask) in enumerate(examples[:FLAGS.show]):
    print(f"\n--- example {i + 1} ({len(ids)} tokens, {int(mask.sum())} trained, "
          f"between {inspect.OPEN} {inspect.CLOSE}) ---", file=sys.stderr if FLAGS.json else sys.stdout)
    print(inspect.mark_trained(tokenizer, ids, mask), file=sys.stderr if FLAGS.json else sys.stdout)


def cmd_make_tasks() -> None:
  from itjax.data import tasks
  if not FLAGS.out:
    raise UsageError("--out DIR is required")
  holdout = tasks.DEFAULT_HOLDOUT if FLAGS.holdout is None else FLAGS.holdout
  paths = tasks.write_splits(FLAGS.out, FLAGS.n, FLAGS.seed, holdout, phrasings=FLAGS.phrasings)
  for split, path in paths.items():
    print(f"{split}: {path}")


def cmd_train() -> None:
  from itjax.io import distributed
  if FLAGS.config is None or not FLAGS.workdir:
    raise UsageError("--config configs/X.py[:ARG] and --workdir DIR are required")
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  from itjax.training.loop import train
  summary = train(FLAGS.config, FLAGS.workdir)
  summary.pop("evals")  # per-example rows; their metrics are in metrics.jsonl
  if distributed.primary():
    print(json.dumps(summary))


def cmd_export() -> None:
  from itjax.interop import export
  if not FLAGS.workdir or not FLAGS.out or FLAGS.format not in ("hf", "peft"):
    raise UsageError("--workdir DIR, --format hf|peft and --out OUT are required")
  if FLAGS.format == "hf":
    out = export.export_hf(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.dtype, FLAGS.overwrite)
  else:
    out = export.export_peft(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.overwrite)
  print(out)


def cmd_eval() -> None:
  import signal

  from itjax.evals.run import Inputs
  from itjax.evals.run import run as run_eval
  from itjax.evals.subject import Settings
  if not FLAGS.out:
    raise UsageError("--out DIR is required")
  # SIGTERM unwinds like Ctrl-C: files are written whole (temp file + rename) or not at all.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  settings = Settings(max_new_tokens=FLAGS.max_new_tokens if FLAGS["max_new_tokens"].present else 256,
                      batch_size=FLAGS.batch_size if FLAGS["batch_size"].present else 16, seed=FLAGS.seed,
                      limit=FLAGS.limit)
  inputs = Inputs(text=FLAGS.text, text_bytes=FLAGS.text_bytes, probes=FLAGS.probes,
                  perturbations=tuple(FLAGS.perturbations) if FLAGS.perturbations is not None else None)
  results = run_eval(FLAGS.model, FLAGS.suites, FLAGS.out, FLAGS.base, FLAGS.step, FLAGS.data, FLAGS.responses,
                     settings, inputs)
  if FLAGS.json:
    print(json.dumps(results, ensure_ascii=False))
  else:
    from itjax.evals.report import markdown
    print(markdown(results))
  print(f"wrote {os.path.join(FLAGS.out, 'results.json')}, report.md and per-example JSONL", file=sys.stderr)


def cmd_curate() -> None:
  from itjax.curate.curate import Options, counts_text, curate, removed_path
  if not FLAGS.data or not FLAGS.out:
    raise UsageError("--data IN[,IN2...] and --out OUT.jsonl are required")
  tokenizer = model = None
  if FLAGS.model and FLAGS.select is not None and FLAGS.by != "random":
    from itjax.interop.loading import load_model
    model = load_model(FLAGS.model)
  elif FLAGS.model:
    from itjax.interop.loading import load_tokenizer
    tokenizer = load_tokenizer(FLAGS.model)
  inputs = [p for p in FLAGS.data.split(",") if p]
  options = Options(dedup=tuple(FLAGS.dedup), near_threshold=FLAGS.near_threshold,
                    decontaminate=tuple(FLAGS.decontaminate), ngram=FLAGS.ngram, min_chars=FLAGS.min_chars,
                    max_tokens=FLAGS.max_tokens, select=FLAGS.select, by=FLAGS.by, seed=FLAGS.seed,
                    template=FLAGS.chat_template)
  curated = curate(inputs, FLAGS.out, options, tokenizer, model)
  for note in curated.notes:
    print(f"itjax curate: {note}", file=sys.stderr)
  summary = curated.summary()
  if FLAGS.report:
    from itjax.curate.report import write_report
    print(f"wrote {write_report(FLAGS.report, curated, inputs, FLAGS.out)} and plots", file=sys.stderr)
  if FLAGS.json:
    print(json.dumps(summary))
  else:
    print(f"records {summary['records']}, kept {summary['kept']}; removed: {counts_text(summary['removed'])}")
  print(f"wrote {FLAGS.out} and {removed_path(FLAGS.out)}", file=sys.stderr)


def cmd_distill() -> None:
  from itjax.curate.curate import counts_text
  from itjax.curate.distill import Options, distill, self_replay, summary_path
  from itjax.interop.loading import load_model
  if not FLAGS.model or not FLAGS.out:
    raise UsageError("--model SRC and --out OUT.jsonl are required")
  if FLAGS["self"].value != bool(FLAGS.prompts) or FLAGS["self"].value == bool(FLAGS.data):
    raise UsageError("give --data IN.jsonl (rewrite its responses) or --self --prompts FILE|general (self-replay)")
  options = Options(template=FLAGS.template, check=FLAGS.check, batch_size=FLAGS.batch_size,
                    max_new_tokens=FLAGS.max_new_tokens if FLAGS["max_new_tokens"].present else 512,
                    limit=FLAGS.limit, chat_template=FLAGS.chat_template, seed=FLAGS.seed)
  if not FLAGS["self"].value:
    from itjax.curate.distill import load_template, read_rewritable
    load_template(options.template)  # bad input stops before the model loads
    read_rewritable(FLAGS.data, options)
  model = load_model(FLAGS.model, dtype=FLAGS.dtype)
  if FLAGS["self"].value:
    summary = self_replay(FLAGS.prompts, FLAGS.out, model, options)
  else:
    summary = distill(FLAGS.data, FLAGS.out, model, options)
  if FLAGS.json:
    print(json.dumps(summary))
  else:
    print(f"records {summary['records']}, accepted {summary['accepted']}; rejected: "
          f"{counts_text(summary['rejected_by_reason'])}")
  print(f"wrote {FLAGS.out} and {summary_path(FLAGS.out)}", file=sys.stderr)


def cmd_sweep(args: list[str]) -> None:
  from itjax.sweep import sweep
  if len(args) != 1:
    raise UsageError("give one experiment file: itjax sweep experiments/NAME.py [--flags]")
  status = sweep.main(args[0], dry_run=FLAGS.dry_run, only=FLAGS.only, launcher=FLAGS.launcher,
                      parallel=FLAGS.parallel, runs_dir=FLAGS.runs_dir, tpu=FLAGS.tpu, zone=FLAGS.zone,
                      project=FLAGS.project, say=lambda line: print(line, flush=True))
  if status:
    sys.exit(status)


def _parse(argv: list[str]) -> list[str]:
  if len(argv) < 2 or argv[1] not in COMMANDS:
    given = argv[1] if len(argv) > 1 else "nothing"
    print(f"usage: itjax {{{','.join(COMMANDS)}}} [--flags]; got {given}\n{__doc__}", file=sys.stderr)
    sys.exit(2)
  try:
    positional = FLAGS([argv[0]] + argv[2:])[1:]
  except flags.Error as e:
    print(f"itjax {argv[1]}: {e}", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError) as e:  # ml_collections: an unknown --config.KEY
    detail = " ".join(str(e.args[0] if e.args else e).replace("\\'", "").replace("\\n", " ").strip("'").split())
    print(f"itjax {argv[1]}: unknown config key {detail}", file=sys.stderr)
    sys.exit(2)
  if positional and argv[1] != "sweep":
    print(f"itjax {argv[1]}: unexpected argument {positional[0]!r} (every input is a --flag)", file=sys.stderr)
    sys.exit(2)
  return argv[:2] + positional


def main(argv: list[str]) -> None:
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # JAX's backend probing logs at INFO
  command = {"generate": cmd_generate, "fetch-demo-model": cmd_fetch_demo_model, "demo": cmd_demo,
             "inspect-data": cmd_inspect_data, "make-tasks": cmd_make_tasks, "train": cmd_train,
             "export": cmd_export, "eval": cmd_eval, "curate": cmd_curate,
             "distill": cmd_distill, "sweep": lambda: cmd_sweep(argv[2:])}[argv[1]]
  try:
    if FLAGS.chat_template:  # before any model loads
      try:
        resolve_template(FLAGS.chat_template, None)
      except ValueError as e:
        raise UsageError(f"--chat_template: {e}") from None
    command()
  except UserError as e:
    sys.stderr.write(f"itjax {argv[1]}: error: {e}\n")  # one write: a line no other thread's output splits
    if isinstance(e, CheckpointNotWritten):  # orbax's writer threads failed with it, and would print tracebacks
      sys.stderr.flush()                    # while Python shuts down around them: leave at once
      os._exit(1)
    sys.exit(1)
  except KeyboardInterrupt:
    print(f"itjax {argv[1]}: interrupted", file=sys.stderr)
    sys.exit(130)
  except Exception:  # not the input's fault: keep everything needed to find it
    traceback.print_exc()
    print(f"itjax {argv[1]}: this is a bug in itjax, not a problem with the input; please report it with the "
          "traceback above", file=sys.stderr)
    sys.exit(70)


def run() -> None:
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # itjax uses transformers' tokenizers only, never torch
  app.run(main, flags_parser=_parse)


if __name__ == "__main__":
  run()
