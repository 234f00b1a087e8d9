"""The training config: one shared base (ml_collections), checked key by key before anything runs.

Config files in configs/ start from `base_config()` and change what their run needs; absl flags override any key
(`--config.lora.rank=16`). The base is locked, so an unknown key is an error, and ml_collections refuses a value of
the wrong type; `validate` checks ranges and combinations and names the key it rejects.
"""

from __future__ import annotations

import os

import ml_collections

from itjax.data import chat, noise
from itjax.errors import UserError
from itjax.io import pyfile
from itjax.model.config import LORA_TARGETS_ALL, REMAT_POLICIES, LoraSpec, ModelConfig

METHODS = ("lora", "full")
ANCHOR_ON = ("targets", "replay")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = ""  # a HF model directory, a .gguf file, or 'demo' (SmolLM2-135M-Instruct, fetched once)
  c.method = "lora"  # 'lora': adapters train, the base is frozen; 'full': every param trains
  c.trainable = ()  # extra regexes over param paths that train too, e.g. ('.*norm/scale',)
  c.init_adapter = ""  # a PEFT LoRA adapter directory to start from (its rank, alpha and targets are used)
  c.steps = 100
  c.batch_size = 8  # rows of max_len tokens per step (global, over all hosts)
  c.microbatches = 1  # gradient accumulation: the batch is split into this many sequential microbatches
  c.max_len = 512
  c.seed = 0
  c.learning_rate = 2e-4
  c.warmup_steps = 10
  c.lr_decay = "cosine"  # cosine, linear or constant after warmup
  c.final_lr_fraction = 0.1
  c.weight_decay = 0.0
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-8
  c.clip_norm = 1.0  # 0 disables clipping
  c.compute_dtype = "float32"  # or bfloat16
  c.base_dtype = "float32"  # the frozen base params under LoRA and the anchor's copy: bfloat16 halves their memory
  c.remat = "attention"  # recompute in the backward pass: none, attention (probabilities only), dots or full
  c.loss_chunk = 64  # sequence positions per chunk of the output projection + cross-entropy
  c.mesh = (1, -1, 1)  # devices along (data, fsdp, tensor); one -1 takes the rest
  c.log_every = 10
  c.eval_every = 50  # 0: only at the start and the end
  c.eval_batches = 0  # 0: the whole validation split
  c.checkpoint_every = 100
  c.keep_checkpoints = 2
  c.keep_best = True  # also keep the checkpoint with the lowest validation loss (in WORKDIR/best)
  # Re-running on a workdir resumes it when its checkpoints were trained with the same shaping settings (method, LoRA
  # rank, alpha, targets, trainable, base_dtype, base model; itjax/training/resume.py), and stops naming the changed
  # keys otherwise. A checkpoint that cannot be restored: 'auto' warns (naming the step and the error) and resumes
  # from the newest one that restores; 'strict' stops. 'restart' moves the workdir's run into WORKDIR/previous/N
  # (nothing is deleted) and starts over.
  c.resume = "auto"
  c.peak_flops = 0.0  # per device, for MFU; 0 = known accelerators only
  c.lora = ml_collections.ConfigDict(dict(rank=8, alpha=16.0, rslora=False, dropout=0.0,
                                          targets=LORA_TARGETS_ALL))
  c.data = data_config()
  c.tasks = tasks_config()
  against_forgetting(c)  # config.replay and config.anchor
  # Generation suites on the live params (itjax.evals): before training, every `every` steps (0: only at the end)
  # and at the end; metrics.jsonl gets eval/SUITE/METRIC. 'tasks' runs when WORKDIR/tasks exists; 'ifeval' needs
  # eval.data (IFEval-format JSONL); 'forgetting' compares with the base (the frozen params, adapters off) and
  # scores the first text_bytes of eval.text (default: the bundled prose) plus eval.probes (JSONL, optional);
  # 'rigidity' applies eval.perturbations (empty: all) to the tasks; 'hallucination' asks questions about invented
  # fact sheets. These three use `subset` examples per prompt set (0: `limit`): each runs several sets.
  # n_probes: how many generated retention probes the forgetting suite asks (0: `subset`, at most 48);
  # n_general: how many general prompts it answers, for degenerate_rate and KL (0: `subset`; 40 at most).
  # 'judge' compares the model's answers to those general prompts with the base's (itjax.evals.judge): judge_mode
  # 'relevance' (judge: a model path, "" for the base) or 'pairwise' (judge: an instruction-tuned model's path;
  # judge_template: a template file, "" for the built-in one).
  # base_cache: a directory where the base's answers are kept and read again (answers-FINGERPRINT.jsonl, by base
  # model): runs of the same base answer each prompt once (itjax sweep points its runs at RUNS_DIR/NAME/_base).
  c.eval = ml_collections.ConfigDict(dict(suites=("tasks",), every=0, limit=32, max_new_tokens=96, batch_size=16,
                                          data="", subset=8, text="", text_bytes=16384, probes="", n_probes=0,
                                          n_general=0, perturbations=(), seed=0,  # seed: generated probes, questions
                                          judge="", judge_mode="relevance", judge_template="", base_cache=""))
  return c


def tasks_config() -> ml_collections.ConfigDict:
  """Generated verifiable tasks (itjax.data.tasks): n > 0 writes WORKDIR/tasks/{train,validation,heldout}.jsonl
  before training (unless present), and data paths may say {workdir}."""
  # phrasings: 'one' says every constraint in its first wording, 'all' in any of its wordings (prompt diversity).
  # holdout: types or groups kept out of training ('grounded' too, so training on grounded questions is an ablation).
  # eval_phrasings: the validation and held-out splits' wordings ("": as phrasings), so that runs trained on other
  # wordings are scored on the same prompts; train_format 'task_name': the train split's prompts name the task's
  # types and give its input, without natural-language instructions (a multi-task format; evaluation keeps them).
  # noise: the share of train records whose response is made wrong (noise_kinds: wrong_answer, broken_format,
  # truncated, taking turns; itjax.data.noise), for data-quality ablations; evaluation splits stay clean.
  # select > 0 keeps that many train records, chosen by select_by as `itjax curate --select N --by BY` chooses
  # (random, quality or diversity; the last two on the base model) among those data.drop_types leaves in.
  # n_eval > 0: the validation and held-out splits' size (0: n / 10).
  # distill: a template name of `itjax distill` (general, refer, math) or a Jinja file has the base rewrite those
  # train records' responses (SDFT), checked by distill_check (tasks: the verifier), the originals kept where a
  # rewrite is rejected; distill_max_new_tokens caps a rewrite. Both steps: itjax.training.task_data.
  # grounded: that many grounded questions join the train split though 'grounded' is held out (a share
  # grounded_unanswerable of them unanswerable, answered with an abstention); the evaluation splits stay the same.
  return ml_collections.ConfigDict(dict(n=0, seed=0, holdout="max_number,numbered,uppercase,grounded",
                                      phrasings="one", eval_phrasings="", train_format="instruction",
                                      noise=0.0, noise_kinds="wrong_answer,broken_format,truncated",
                                      select=0, select_by="random", n_eval=0, distill="",
                                      distill_check="tasks", distill_max_new_tokens=128, grounded=0,
                                      grounded_unanswerable=0.5))


def data_config() -> ml_collections.ConfigDict:
  """config.data: the training and validation data and how they are read."""
  return ml_collections.ConfigDict(dict(
      train="",  # FILE[:WEIGHT][,FILE[:WEIGHT]...]
      validation="",
      format="",  # '' = detected per file
      chat_template="",  # '' = the tokenizer's own
      train_on="all",
      length_policy="truncate",
      on_error="raise",
      pack=True,
      # Types left out of data.train (records carry `types`, as generated tasks do): 'a,b' drops every training
      # record of type a or b, counted in the log; validation and evaluation sets stay whole.
      drop_types="",
      # Perturbation augmentation of data.train's task records (itjax.data.augment): each is perturbed with
      # probability augment_rate by one of `augment` (the rigidity suite's perturbations: typos_2, typos_5, case,
      # whitespace, reworded, reordered, system), drawn per record from augment_seed and its prompt.
      augment=(), augment_rate=0.5, augment_seed=0))


def against_forgetting(c: ml_collections.ConfigDict) -> None:
  """The keys of the two ways to hold the tuned model near its base: self-replay and a KL-to-base anchor."""
  # Self-replay against forgetting (itjax distill --self): n > 0 has the base model answer n general prompts
  # (`prompts`: 'general', the built-in generator, or a JSONL file of {"prompt"}) into WORKDIR/replay/replay.jsonl
  # before training (resuming if cut short), and mixes its accepted answers into data.train at `weight` (relative
  # to the other sources' weights, 1 unless given).
  c.replay = ml_collections.ConfigDict(dict(n=0, prompts="general", weight=0.3, max_new_tokens=256, batch_size=16,
                                            seed=0))
  # A KL-to-base anchor against forgetting: loss = cross-entropy + weight x KL(base || tuned), the KL averaged per
  # token over `on`'s tokens. The logged loss is that whole objective, with the mean KL beside it as kl_to_base;
  # validation loss stays cross-entropy. Not compared on resume: it changes the objective, not the trained state.
  # weight: >= 0; 0 (the default) is the plain step, which never runs the base.
  # on: 'targets' (every trained token) or 'replay' (the trained tokens of self-replay examples, replay.n > 0, and
  #   of the data.train files named in `sources`; batches without any log kl_to_base 0).
  # sources: data.train files (as written there, comma-separated) whose examples count as replay for on='replay'.
  # The base: under LoRA the frozen params with the adapters off (no copy; a second forward pass without gradient);
  # under method 'full' (or other base params in config.trainable) a frozen copy of their initial values, in
  # base_dtype, kept on the devices: 4 bytes a param in float32, 538 MB for SmolLM2-135M (logged at the start).
  c.anchor = ml_collections.ConfigDict(dict(weight=0.0, on="targets", sources=""))


def _check(ok: bool, key: str, message: str, value) -> None:
  if not ok:
    raise UserError(f"config.{key} {message}, got {value!r}")


def from_file(path: str, arg: str = "") -> ml_collections.ConfigDict:
  """A config file's get_config(arg), loaded by path (configs/*.py are files, not an importable package). A file
  that is missing, does not run, or rejects `arg` is a UserError naming it (and the line)."""
  return pyfile.call(path, pyfile.run(path, "config file"), "get_config", arg)


def load(spec: str) -> ml_collections.ConfigDict:
  """PATH[:ARG] as --config reads it: get_config(ARG), or get_config() when no ':ARG' is given."""
  path, sep, arg = spec.partition(":")
  return pyfile.call(path, pyfile.run(path, "config file"), "get_config", *((arg,) if sep else ()))


def data_paths(c: ml_collections.ConfigDict, key: str, workdir: str, replay: bool = True) -> str:
  """config.data.<key> with {workdir} filled in; the training data gains the self-replay file when replay.n > 0."""
  spec = c.data[key].replace("{workdir}", workdir)
  if key == "train" and c.replay.n > 0 and replay:
    spec += f",{replay_path(workdir)}:{c.replay.weight}"
  return spec


def replay_path(workdir: str) -> str:
  return os.path.join(workdir, "replay", "replay.jsonl")


def validate(c: ml_collections.ConfigDict, model_given: bool = False) -> None:
  """Raises UserError naming the first bad key (`model_given`: the model comes as an object, config.model is not
  read)."""
  _check(c.method in METHODS, "method", f"must be one of {METHODS}", c.method)
  _check(model_given or bool(c.model), "model", "must name a model (a HF directory, a .gguf file or 'demo')",
         c.model)
  for key in ("steps", "batch_size", "microbatches", "max_len", "log_every", "checkpoint_every",
              "keep_checkpoints"):
    _check(c[key] > 0, key, "must be > 0", c[key])
  for key in ("eval_every", "eval_batches", "warmup_steps", "weight_decay", "clip_norm", "peak_flops",
              "loss_chunk"):
    _check(c[key] >= 0, key, "must be >= 0", c[key])
  _check(c.learning_rate > 0, "learning_rate", "must be > 0", c.learning_rate)
  _check(c.batch_size % c.microbatches == 0, "microbatches", f"must divide batch_size {c.batch_size}",
         c.microbatches)
  _check(c.lr_decay in ("cosine", "linear", "constant"), "lr_decay", "must be cosine, linear or constant",
         c.lr_decay)
  _check(0 <= c.final_lr_fraction <= 1, "final_lr_fraction", "must be in [0, 1]", c.final_lr_fraction)
  for key in ("compute_dtype", "base_dtype"):
    _check(c[key] in ("float32", "bfloat16"), key, "must be float32 or bfloat16", c[key])
  _check(c.remat in REMAT_POLICIES, "remat", f"must be one of {REMAT_POLICIES}", c.remat)
  _check(len(c.mesh) == 3 and all(isinstance(x, int) and (x > 0 or x == -1) for x in c.mesh)
         and list(c.mesh).count(-1) <= 1, "mesh", "must be 3 sizes (data, fsdp, tensor), each > 0 or one -1",
         c.mesh)
  if c.init_adapter:
    _check(c.method == "lora", "init_adapter", "needs method 'lora'", c.init_adapter)
    _check_path("init_adapter", c.init_adapter, directory=True)
  if c.method == "lora":
    _check(c.lora.rank > 0, "lora.rank", "must be > 0", c.lora.rank)
    _check(c.lora.alpha > 0, "lora.alpha", "must be > 0", c.lora.alpha)
    _check(0 <= c.lora.dropout < 1, "lora.dropout", "must be in [0, 1)", c.lora.dropout)
    _check(len(c.lora.targets) > 0, "lora.targets", "must list at least one regex", c.lora.targets)
  _check(c.resume in ("auto", "strict", "restart"), "resume", "must be auto, strict or restart", c.resume)
  _check_data(c)
  _check_anchor(c)
  from itjax.evals import registry  # the suites that run inside training; no JAX
  live = registry.names(live=True)
  _check(set(c.eval.suites) <= set(live), "eval.suites", f"may hold {', '.join(live)}", c.eval.suites)
  _check("ifeval" not in c.eval.suites or bool(c.eval.data), "eval.data", "must name an IFEval-format JSONL for "
         "eval.suites 'ifeval'", c.eval.data)
  from itjax.data.perturb import PERTURBATIONS
  unknown = [p for p in c.eval.perturbations if p not in PERTURBATIONS]
  _check(not unknown, "eval.perturbations", f"may hold {', '.join(PERTURBATIONS)}", c.eval.perturbations)
  for key in ("every", "limit", "subset", "n_probes", "n_general"):
    _check(c.eval[key] >= 0, f"eval.{key}", "must be >= 0", c.eval[key])
  for key in ("max_new_tokens", "batch_size", "text_bytes"):
    _check(c.eval[key] > 0, f"eval.{key}", "must be > 0", c.eval[key])
  for key in ("data", "text", "probes", "judge_template"):  # read by the suites during training: stop before it starts
    if c.eval[key] and "://" not in c.eval[key]:
      _check_path(f"eval.{key}", c.eval[key])
  _check(c.eval.judge_mode in ("relevance", "pairwise"), "eval.judge_mode", "must be relevance or pairwise",
         c.eval.judge_mode)
  if c.eval.judge:
    _check_path("eval.judge", c.eval.judge, directory=os.path.isdir(c.eval.judge))
  from itjax.io.demo_model import BUILTINS
  if c.model not in BUILTINS and not model_given:
    _check(os.path.exists(c.model), "model", "does not exist", c.model)
    _check(os.path.isdir(c.model) or c.model.endswith(".gguf"), "model", "is a file; expected a Hugging Face model "
           "directory, a .gguf file or a training workdir", c.model)
    _check_path("model", c.model, directory=os.path.isdir(c.model))


def _check_data(c: ml_collections.ConfigDict) -> None:
  """data, tasks and replay."""
  d = c.data
  _check(bool(d.train), "data.train", "must name the training data (FILE[:WEIGHT],...)", d.train)
  _check(d.train_on in ("all", "last"), "data.train_on", "must be all or last", d.train_on)
  _check(d.length_policy in ("truncate", "drop"), "data.length_policy", "must be truncate or drop",
         d.length_policy)
  _check(d.on_error in ("raise", "skip"), "data.on_error", "must be raise or skip", d.on_error)
  from itjax.data import augment
  augment.check(d.augment, d.augment_rate)
  if d.chat_template:
    try:
      chat.resolve(d.chat_template, None)
    except ValueError as e:
      raise UserError(f"config.data.chat_template: {e}") from None
  _check(c.tasks.n >= 0, "tasks.n", "must be >= 0", c.tasks.n)
  _check(c.replay.n >= 0, "replay.n", "must be >= 0", c.replay.n)
  _check(c.replay.weight > 0, "replay.weight", "must be > 0", c.replay.weight)
  for key in ("max_new_tokens", "batch_size"):
    _check(c.replay[key] > 0, f"replay.{key}", "must be > 0", c.replay[key])
  _check(c.replay.prompts == "general" or os.path.isfile(c.replay.prompts), "replay.prompts",
         "must be 'general' or a JSONL file of {\"prompt\": ...} lines", c.replay.prompts)
  if c.replay.n > 0 and c.replay.prompts != "general":
    _check_path("replay.prompts", c.replay.prompts)
  _check(c.tasks.phrasings in ("one", "all"), "tasks.phrasings", "must be one or all", c.tasks.phrasings)
  _check(c.tasks.eval_phrasings in ("", "one", "all"), "tasks.eval_phrasings", "must be '', one or all",
         c.tasks.eval_phrasings)
  _check(c.tasks.train_format in ("instruction", "task_name"), "tasks.train_format",
         "must be instruction or task_name", c.tasks.train_format)
  _check(0 <= c.tasks.noise <= 1, "tasks.noise", "must be a share in [0, 1]", c.tasks.noise)
  _check(c.tasks.n_eval >= 0, "tasks.n_eval", "must be >= 0 (0: tasks.n / 10)", c.tasks.n_eval)
  _check(c.tasks.select >= 0, "tasks.select", "must be a number of records >= 0 (0: all)", c.tasks.select)
  _check(c.tasks.select_by in ("random", "quality", "diversity"), "tasks.select_by",
         "must be random, quality or diversity", c.tasks.select_by)
  _check_distill(c.tasks)
  _check(c.tasks.grounded >= 0, "tasks.grounded", "must be a number of questions >= 0", c.tasks.grounded)
  _check(0 <= c.tasks.grounded_unanswerable <= 1, "tasks.grounded_unanswerable", "must be a share in [0, 1]",
         c.tasks.grounded_unanswerable)
  try:
    noise.parse_kinds(c.tasks.noise_kinds)
  except UserError as e:
    raise UserError(f"config.tasks.noise_kinds: {e}") from None


def _check_distill(t: ml_collections.ConfigDict) -> None:
  if not t.distill:
    return
  from itjax.curate.distill import CHECKS, TEMPLATES
  _check(t.distill in TEMPLATES or os.path.isfile(t.distill), "tasks.distill",
         f"must be '' (off), {', '.join(TEMPLATES)} or a Jinja file", t.distill)
  _check(t.distill_check in CHECKS, "tasks.distill_check", f"must be one of {', '.join(CHECKS)}", t.distill_check)
  _check(t.distill_max_new_tokens > 0, "tasks.distill_max_new_tokens", "must be > 0", t.distill_max_new_tokens)


def _check_anchor(c: ml_collections.ConfigDict) -> None:
  from itjax.data.dataset import parse_sources
  a = c.anchor
  _check(0 <= a.weight < float("inf"), "anchor.weight", "must be a number >= 0", a.weight)
  _check(a.on in ANCHOR_ON, "anchor.on", "must be targets or replay", a.on)
  if a.sources:
    train = {os.path.normpath(p) for p, _ in parse_sources(c.data.train)}
    _check(all(os.path.normpath(p) in train for p, _ in parse_sources(a.sources)), "anchor.sources",
           f"must name files of data.train ({c.data.train})", a.sources)
  if a.weight > 0 and a.on == "replay":
    _check(c.replay.n > 0 or bool(a.sources), "anchor.on", "'replay' needs replay data: replay.n > 0, or "
           "anchor.sources naming data.train files", a.on)


def anchor_files(c: ml_collections.ConfigDict, workdir: str) -> set[str]:
  """The data.train files ({workdir} filled in) whose examples the anchor weighs: with anchor.on 'replay' (and a
  weight), the self-replay file and anchor.sources; none otherwise."""
  if not (c.anchor.weight > 0 and c.anchor.on == "replay"):
    return set()
  from itjax.data.dataset import parse_sources
  files = {os.path.normpath(p.replace("{workdir}", workdir)) for p, _ in parse_sources(c.anchor.sources)
           } if c.anchor.sources else set()
  if c.replay.n > 0:
    files.add(os.path.normpath(replay_path(workdir)))
  return files


def path_problem(path: str, directory: bool = False) -> str | None:
  """Why `path` cannot be read as a file (or a directory), or None."""
  if not os.path.exists(path):
    return "does not exist" + (" (a name in it is too long)" if any(len(os.fsencode(p)) > 255
                                                                     for p in path.split(os.sep)) else "")
  if os.path.isdir(path) != directory:
    return "is a directory; expected a file" if not directory else "is a file; expected a directory"
  if not os.access(path, os.R_OK | (os.X_OK if directory else 0)):
    return "cannot be read (permission denied)"
  return None


def _check_path(key: str, path: str, directory: bool = False) -> None:
  problem = path_problem(path, directory)
  if problem:
    raise UserError(f"config.{key} {path} {problem}")


def check_data_files(c: ml_collections.ConfigDict, workdir: str) -> None:
  """That the files of data.train and data.validation exist ({workdir} filled in), naming the key otherwise."""
  from itjax.data.dataset import parse_sources
  for key in ("train", "validation"):
    spec = data_paths(c, key, workdir, replay=False)  # the replay file is written after the model loads
    for path, _ in parse_sources(spec) if spec else []:
      problem = path_problem(path)
      if problem and problem.startswith("does not exist"):
        raise UserError(f"config.data.{key} names a file that does not exist ({path}){problem[14:]}, got {spec!r}")
      _check_path(f"data.{key}", path)


def training_model_config(c: ml_collections.ConfigDict, model_config: ModelConfig) -> ModelConfig:
  """The loaded model's architecture with the run's adapters, compute dtype and remat policy (layers scanned)."""
  lora = None
  if c.method == "lora":
    lora = LoraSpec(c.lora.rank, float(c.lora.alpha), tuple(c.lora.targets), c.lora.rslora, c.lora.dropout)
  return model_config.replace(lora=lora, dtype=c.compute_dtype, remat=c.remat, scan_layers=True)
