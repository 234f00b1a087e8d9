"""`itjax demo` (LoRA-tune SmolLM2-135M-Instruct on generated tasks, before/after figures) and `itjax
fetch-demo-model`."""

from __future__ import annotations

import os

from absl import flags

from itjax.cli.common import Command


def define_demo(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", os.path.join("runs", "demo"), "Training directory: checkpoints, metrics.jsonl, "
                      "TensorBoard events, plots, the before/after figures.", flag_values=fv)


def cmd_demo(f: flags.FlagValues, args: list[str]) -> None:
  """LoRA-tunes SmolLM2-135M-Instruct on generated tasks (configs/smollm2_135m_lora.py) and shows before/after."""
  from itjax.io import workdir as workdir_lib
  workdir = f.workdir or os.path.join("runs", "demo")
  workdir_lib.check_writable(workdir)  # before the model is fetched
  from itjax.demo import load_config, run_demo
  config = f.config if f.config is not None else load_config()
  from itjax.training.loop import stop_on_sigterm
  with stop_on_sigterm() as stop:
    run_demo(workdir, config, stop=stop)


def cmd_fetch_demo_model(f: flags.FlagValues, args: list[str]) -> None:
  from itjax.io import demo_model
  print(demo_model.fetch())


COMMANDS = (
    Command("fetch-demo-model", "prints the path of the SmolLM2-135M-Instruct GGUF (fetched once, cached)", "",
            lambda fv: None, cmd_fetch_demo_model),
    Command("demo", "LoRA-tunes SmolLM2-135M-Instruct on generated tasks; before/after figures",
            "[--workdir runs/demo] [--config configs/X.py[:ARG]] [--config.KEY=VALUE ...]", define_demo, cmd_demo,
            config="A training config file (configs/*.py[:ARG]; default: configs/smollm2_135m_lora.py)."),
)
