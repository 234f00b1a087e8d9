"""`itjax demo` (LoRA-tune SmolLM2-135M-Instruct on generated tasks, before/after figures) and `itjax
fetch-demo-model`."""

from __future__ import annotations

import os

from absl import flags

from itjax.cli.common import Command
from itjax.errors import UserError


def define_demo(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", os.path.join("runs", "demo"), "Training directory: checkpoints, metrics.jsonl, "
                      "TensorBoard events, plots, the before/after figures.", flag_values=fv)
  flags.DEFINE_string("model", None, "A built-in model and its recipe: demo / smollm2-135m (SmolLM2-135M-Instruct, "
                      "configs/smollm2_135m_lora.py; the default) or gemma3-270m (Gemma 3 270M, a base model, "
                      "configs/gemma3_270m_lora.py).", flag_values=fv)


def cmd_demo(f: flags.FlagValues, args: list[str]) -> None:
  """LoRA-tunes SmolLM2-135M-Instruct (or --model's built-in model) on generated tasks with its config and shows
  before/after."""
  from itjax.demo import CONFIGS, load_config, run_demo
  if f.model is not None and f.model not in CONFIGS:
    raise UserError(f"--model {f.model}: not a built-in model; expected one of {', '.join(CONFIGS)}")
  if f.model is not None and f.config is not None:
    raise UserError("give --model (a built-in model with its recipe) or --config, not both")
  from itjax.io import workdir as workdir_lib
  workdir = f.workdir or os.path.join("runs", "demo")
  workdir_lib.check_writable(workdir)  # before the model is fetched
  config = f.config if f.config is not None else load_config(CONFIGS[f.model or "demo"])
  from itjax.training.loop import stop_on_sigterm
  with stop_on_sigterm() as stop:
    run_demo(workdir, config, stop=stop)


def define_fetch(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("model", "demo", "The built-in model: demo (= smollm2-135m, SmolLM2-135M-Instruct) or "
                      "gemma3-270m (Gemma 3 270M, the base model).", flag_values=fv)


def cmd_fetch_demo_model(f: flags.FlagValues, args: list[str]) -> None:
  from itjax.io import demo_model
  if f.model not in demo_model.BUILTINS:
    raise UserError(f"--model {f.model}: not a built-in model; expected one of {', '.join(demo_model.BUILTINS)}")
  print(demo_model.fetch(name=f.model))


COMMANDS = (
    Command("fetch-demo-model", "prints the path of a built-in model's GGUF (fetched once, cached): the demo's "
            "SmolLM2-135M-Instruct, or --model gemma3-270m", "[--model demo|smollm2-135m|gemma3-270m]",
            define_fetch, cmd_fetch_demo_model),
    Command("demo", "LoRA-tunes SmolLM2-135M-Instruct on generated tasks; before/after figures",
            "[--workdir runs/demo] [--model demo|gemma3-270m | --config configs/X.py[:ARG]] [--config.KEY=VALUE ...]",
            define_demo, cmd_demo,
            config="A training config file (configs/*.py[:ARG]; default: configs/smollm2_135m_lora.py)."),
)
