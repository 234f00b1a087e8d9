"""What every command of the `itjax` command line is made of: its entry in the command table, and the flags that
several commands define alike (each on its own flag set: no command sees another's flags)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from absl import flags

from itjax.data.prompts import NO_TEMPLATE  # noqa: F401 -- --chat_template none; the commands import it here


@dataclasses.dataclass(frozen=True)
class Alias:
  """An older flag name that keeps working: it prints a one-line notice and stands for `--canonical` (or, for a
  boolean alias with `value`, for `--canonical value`)."""
  name: str
  canonical: str
  value: str | None = None
  deprecated: bool = False

  def target(self) -> str:
    return f"--{self.canonical}" + (f" {self.value}" if self.value is not None else "")


@dataclasses.dataclass(frozen=True)
class Command:
  """One `itjax NAME` command: its flags (`define` adds them to a fresh flag set) and what it runs."""
  name: str
  summary: str  # one line in `itjax --help`
  usage: str  # what follows `itjax NAME` in its usage line; lines after the first are indented under it
  define: Callable[[flags.FlagValues], None]
  run: Callable[[flags.FlagValues, list[str]], int | None]  # (its parsed flags, positional arguments); exit status
  aliases: tuple[Alias, ...] = ()
  config: str | None = None  # the help of its --config flag (a training config file), if it has one
  positional: bool = False  # takes positional arguments (sweep's experiment file); others take --flags only
  no_template: bool = False  # --chat_template none means something to it


MODEL = ("A Hugging Face model directory, a .gguf file or a training workdir (its base with the latest checkpoint's "
         "adapters merged).")


def model(fv: flags.FlagValues, text: str = MODEL) -> None:
  flags.DEFINE_string("model", None, text, flag_values=fv)


def data(fv: flags.FlagValues, text: str) -> None:
  flags.DEFINE_string("data", None, text, flag_values=fv)


def out(fv: flags.FlagValues, text: str) -> None:
  flags.DEFINE_string("out", None, text, flag_values=fv)


def overwrite(fv: flags.FlagValues, what: str = "--out") -> None:
  flags.DEFINE_bool("overwrite", False, f"Replace an existing {what}; an input is never replaced.", flag_values=fv)


def seed(fv: flags.FlagValues, text: str = "Sampling seed.") -> None:
  flags.DEFINE_integer("seed", 0, text, flag_values=fv)


def json_flag(fv: flags.FlagValues) -> None:
  flags.DEFINE_bool("json", False, "Print the summary as one JSON object.", flag_values=fv)


def dtype(fv: flags.FlagValues, text: str = "Compute dtype.") -> None:
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], text, flag_values=fv)


def chat_template(fv: flags.FlagValues, extra: str = "") -> None:
  flags.DEFINE_string("chat_template", None, "A built-in template name (chatml, llama3, alpaca, gemma) or a Jinja "
                      "template instead of the tokenizer's own." + extra, flag_values=fv)


def max_new_tokens(fv: flags.FlagValues, default: int) -> None:
  flags.DEFINE_integer("max_new_tokens", default, "Tokens generated at most per prompt.", lower_bound=1,
                       flag_values=fv)


def batch_size(fv: flags.FlagValues, default: int) -> None:
  flags.DEFINE_integer("batch_size", default, "Prompts decoded at once (slots; a finished one takes the next "
                       "prompt).", lower_bound=1, flag_values=fv)


def limit(fv: flags.FlagValues, text: str) -> None:
  flags.DEFINE_integer("limit", None, text, lower_bound=1, flag_values=fv)
