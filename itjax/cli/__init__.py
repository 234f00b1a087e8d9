"""The `itjax` command line: `itjax COMMAND [--flags]`; `itjax COMMAND --help` shows a command's usage and flags.

Each command defines its own flags (generate.py, demo.py, data.py, train.py, eval.py, curate.py, sweep.py), on a
fresh flag set at every call: no flag is global, one name means one thing, and `main(args)` runs in this process as
often as wanted. An older name of a flag keeps working as an alias that says what it stands for. Every command also
takes --debug (or ITJAX_DEBUG=1 in the environment): an error then prints its whole traceback, causes included.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import textwrap
import traceback
from collections.abc import Sequence

from absl import flags

from itjax.cli import curate, data, demo, generate, sweep, train
from itjax.cli import eval as evaluate
from itjax.cli.common import NO_TEMPLATE, Command
from itjax.errors import CheckpointNotWritten, UserError

COMMANDS: dict[str, Command] = {c.name: c for module in (generate, demo, data, train, evaluate, curate, sweep)
                                for c in module.COMMANDS}
HELP = ("-h", "--help", "-help", "--helpfull")
WIDTH = 118  # help lines
MULTI = re.compile(r";\s*repeat this option to specify a list of values$")  # absl's words, said in the flags' help


def _define_common(fv: flags.FlagValues) -> None:
  flags.DEFINE_bool("debug", False, "On an error, print its whole traceback, the causes it hides included (also: "
                    "ITJAX_DEBUG=1 in the environment).", flag_values=fv)
  flags.DEFINE_integer("verbosity", None, "What is logged: -1 warnings and errors (the default), 0 also info, 1 also "
                       "debug.", short_name="v", flag_values=fv)


def flag_values(command: Command, args: Sequence[str] = ()) -> flags.FlagValues:
  """A fresh flag set: the command's flags, its aliases, and --debug and --verbosity (every command has them). `args`
  are the command's arguments, where --config finds its --config.KEY=VALUE overrides."""
  fv = flags.FlagValues()
  command.define(fv)
  if command.config:
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, command.config, flag_values=fv, lock_config=True,
                                    sys_argv=["itjax", *args])
  for alias in command.aliases:
    if alias.value is None:
      flags.DEFINE_alias(alias.name, alias.canonical, flag_values=fv)
    else:
      flags.DEFINE_bool(alias.name, False, "", flag_values=fv)
    fv[alias.name].help = f"{'A deprecated' if alias.deprecated else 'An'} alias of {alias.target()}."
  _define_common(fv)
  return fv


def _flags(fv: flags.FlagValues) -> list[flags.Flag]:
  """Each flag once (a short name is a second key), in the order they were defined."""
  unique = {}
  for name in fv:
    unique.setdefault(id(fv[name]), fv[name])
  return list(unique.values())


def _default(flag: flags.Flag) -> str:
  value = flag.default
  if value is None or value is False or value == "" or value == []:
    return ""
  if value is True:
    return "true"
  return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def help_text(command: Command) -> str:
  """`itjax COMMAND --help`: its usage, what it does, and its flags (only its own)."""
  head = f"usage: itjax {command.name} "
  usage = command.usage.split("\n")
  lines = [(head + usage[0]).rstrip()]
  lines += [(" " * len("usage: ") if u.startswith("itjax ") else " " * len(head)) + u for u in usage[1:]]
  lines += ["", command.summary[0].upper() + command.summary[1:] + ".", "", "flags:"]
  for flag in _flags(flag_values(command)):
    name = f"--{'[no]' if flag.boolean else ''}{flag.name}"
    if flag.short_name:
      name = f"-{flag.short_name}, {name}"
    text = f"{name}: {' '.join(MULTI.sub('', flag.help).split())}"  # an enum's help starts with <its|values>
    if _default(flag):
      text += f" (default: {_default(flag)})"
    lines += textwrap.wrap(text, WIDTH, initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False)
  lines.append("  -h, --help: show this help and exit.")
  return "\n".join(lines)


def overview() -> str:
  """`itjax --help`: the commands, one line each."""
  width = max(map(len, COMMANDS))
  lines = ["usage: itjax COMMAND [--flags]   (itjax COMMAND --help: the command's usage and flags)", "", "commands:"]
  lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
  lines += ["", "Every command also takes --debug (or ITJAX_DEBUG=1): an error prints its whole traceback."]
  return "\n".join(lines)


def _debug_env() -> bool:
  return os.environ.get("ITJAX_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _print_traceback(error: BaseException) -> None:
  """The error's traceback with every exception before it: causes, and the contexts that `raise ... from None`
  hides (the JSON or OS error behind an input reader's one-line message)."""
  seen, todo = set(), [error]
  while todo:
    e = todo.pop()
    if id(e) in seen:
      continue
    seen.add(id(e))
    e.__suppress_context__ = False
    todo += [x for x in (e.__cause__, e.__context__) if x is not None]
  traceback.print_exception(type(error), error, error.__traceback__)


def _usage_error(name: str, message: str, error: BaseException | None, debug: bool) -> int:
  if debug and error is not None:
    _print_traceback(error)
  sys.stderr.write(f"itjax {name}: {message}\n")
  return 2


def _apply_aliases(command: Command, fv: flags.FlagValues) -> None:
  for alias in command.aliases:
    used = fv[alias.name]
    if not used.present or (alias.value is not None and not used.value):
      continue
    sys.stderr.write(f"itjax {command.name}: --{alias.name} is {'a deprecated' if alias.deprecated else 'an'} alias "
                     f"of {alias.target()}\n")
    canonical = fv[alias.canonical]
    if alias.value is None:
      if canonical.present > used.present:
        raise UserError(f"give --{alias.canonical} or its alias --{alias.name}, not both")
    else:
      if canonical.present and canonical.value != alias.value:
        raise UserError(f"--{alias.name} ({alias.target()}) contradicts --{alias.canonical} {canonical.value}")
      setattr(fv, alias.canonical, alias.value)


def _check_chat_template(command: Command, fv: flags.FlagValues) -> None:
  """A misspelt --chat_template stops before any model loads."""
  template = fv["chat_template"].value if "chat_template" in fv else None
  if template is None:
    return
  if template == NO_TEMPLATE:
    if command.no_template:
      return
    takers = ", ".join(f"itjax {c.name}" for c in COMMANDS.values() if c.no_template)
    raise UserError(f"--chat_template none (no template) is for {takers}; {command.name} needs a chat template")
  from itjax.data.chat import resolve
  try:
    resolve(template, None)
  except ValueError as e:
    raise UserError(f"--chat_template: {e}") from None


def _check_config(command: Command, fv: flags.FlagValues) -> None:
  """A --config file that failed to load (ml_collections keeps the error until the config is used) stops here."""
  if not command.config or fv.config is None:
    return
  try:
    fv.config.get  # noqa: B018  (a config that failed to load raises on any attribute)
  except OSError as e:
    detail = str(e.__cause__ or e).strip().splitlines()[-1].strip()
    raise UserError(f"--config {fv['config'].config_filename}: cannot load it ({detail})") from e


def _logging(verbosity: int | None) -> None:
  """Warnings and errors only, Python's and absl's default (JAX's backend probing logs at INFO), unless asked."""
  if verbosity is None:
    return
  import logging as std_logging

  from absl import logging
  logging.set_verbosity(verbosity)
  level = logging.converter.absl_to_standard(max(-3, min(1, verbosity)))
  std_logging.basicConfig(level=level)  # a handler for the root logger, if it has none
  std_logging.getLogger().setLevel(level)


def main(args: Sequence[str]) -> int | None:
  """`itjax ARGS` (the arguments after `itjax`) in this process; returns the exit status. Nothing it parses outlives
  the call."""
  args = list(args)
  if not args or args[0] in (*HELP, "help"):
    if len(args) > 1 and args[0] == "help" and args[1] in COMMANDS:
      print(help_text(COMMANDS[args[1]]))
      return 0
    print(overview(), file=sys.stdout if args else sys.stderr)
    return 0 if args else 2
  name, rest = args[0], args[1:]
  command = COMMANDS.get(name)
  if command is None:
    close = difflib.get_close_matches(name, COMMANDS, n=1)
    print(f"usage: itjax COMMAND [--flags]; unknown command {name!r}" + (f" (did you mean {close[0]!r}?)" if close
          else "") + f"\n\n{overview()}", file=sys.stderr)
    return 2
  if any(a in HELP for a in rest[:rest.index("--") if "--" in rest else len(rest)]):
    print(help_text(command))
    return 0

  debug = _debug_env() or "--debug" in rest  # before the parse: its own errors
  try:
    fv = flag_values(command, rest)
    positional = fv([f"itjax {name}", *rest])[1:]
  except flags.Error as e:
    return _usage_error(name, f"{e} (itjax {name} --help lists its flags)", e, debug)
  except (AttributeError, KeyError) as e:  # ml_collections: an unknown --config.KEY
    detail = " ".join(str(e.args[0] if e.args else e).replace("\\'", "").replace("\\n", " ").strip("'").split())
    return _usage_error(name, f"unknown config key {detail}", e, debug)
  if positional and not command.positional:
    return _usage_error(name, f"unexpected argument {positional[0]!r} (every input is a --flag)", None, debug)
  debug = debug or fv.debug
  _logging(fv.verbosity)

  try:
    _apply_aliases(command, fv)
    _check_config(command, fv)
    _check_chat_template(command, fv)  # before any model loads
    return command.run(fv, positional)
  except UserError as e:
    if debug:
      _print_traceback(e)
    sys.stderr.write(f"itjax {name}: error: {e}\n")  # one write: a line no other thread's output splits
    if isinstance(e, CheckpointNotWritten):  # orbax's writer threads failed with it, and would print tracebacks
      sys.stderr.flush()                    # while Python shuts down around them: leave at once
      os._exit(1)
    return 1
  except KeyboardInterrupt as e:
    if debug:
      _print_traceback(e)
    print(f"itjax {name}: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # not the input's fault: keep everything needed to find it
    if debug:
      _print_traceback(e)
    else:
      traceback.print_exc()
    print(f"itjax {name}: this is a bug in itjax, not a problem with the input; please report it with the "
          "traceback above", file=sys.stderr)
    return 70


def run() -> None:
  """The `itjax` executable."""
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # itjax uses transformers' tokenizers only, never torch
  try:
    code = main(sys.argv[1:])
    sys.stdout.flush()
  except BrokenPipeError:  # `itjax --help | head`: the reader left; nothing more to say
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 0
  sys.exit(code)
