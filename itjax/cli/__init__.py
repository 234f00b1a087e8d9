"""The `itjax` command line: `itjax COMMAND [--flags]`; `itjax COMMAND --help` shows a command's usage and flags.

Each command defines its own flags (generate.py, demo.py, data.py, train.py, eval.py, curate.py, sweep.py), on a
fresh flag set at every call: no flag is global, one name means one thing, and `main(args)` runs in this process as
often as wanted. An older name of a flag keeps working as an alias that says what it stands for. Every command also
takes --debug (or ITJAX_DEBUG=1 in the environment): an error then prints its whole traceback, causes included.
"""

from __future__ import annotations

import difflib
import errno
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


def _config_arg(args: Sequence[str]) -> str | None:
  """The value of --config (the last one given) among a command's arguments, as absl will parse it."""
  value = None
  for i, arg in enumerate(args):
    if arg == "--":
      break
    name, eq, given = arg.lstrip("-").partition("=")
    if arg.startswith("-") and name == "config":
      value = given if eq else (args[i + 1] if i + 1 < len(args) else None)
  return value


def _load_config_file(command: Command, args: Sequence[str]) -> None:
  """A --config file runs here first, so that whatever stops it (missing, a directory, a syntax error, an unknown
  variant) is one line naming the file; ml_collections would wrap it into a long flag error or hide it."""
  spec = _config_arg(args) if command.config else None
  if spec is None:
    return
  from itjax.training.config import load
  load(spec)  # its errors start with the file's name (and line)


def _parse(command: Command, args: Sequence[str], debug: bool) -> tuple[flags.FlagValues | None, list[str], int]:
  """(the parsed flags, the positional arguments, 0), or (None, [], exit status) after a usage error."""
  name = command.name
  try:
    fv = flag_values(command, args)
    positional = fv([f"itjax {name}", *args])[1:]
  except flags.Error as e:
    return None, [], _usage_error(name, f"{' '.join(str(e).split())} (itjax {name} --help lists its flags)", e,
                                  debug)
  except (AttributeError, KeyError) as e:  # ml_collections: an unknown --config.KEY
    detail = " ".join(str(e.args[0] if e.args else e).replace("\\'", "").replace("\\n", " ").strip("'").split())
    return None, [], _usage_error(name, f"unknown config key {detail}", e, debug)
  if positional and not command.positional:
    return None, [], _usage_error(name, f"unexpected argument {positional[0]!r} (every input is a --flag)", None,
                                  debug)
  return fv, positional, 0


# An OSError with one of these numbers is the user's to fix (a path, its permissions, its disk): one line, exit 1.
# Any other stays a bug.
USER_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOENT", "EISDIR", "ENOTDIR", "EACCES", "EPERM", "EROFS",
                                                    "ENOSPC", "EDQUOT", "ENAMETOOLONG", "EEXIST", "EFBIG", "ELOOP")
                        if hasattr(errno, n))
WRITES = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, n))


def os_error_line(error: BaseException) -> str | None:
  """One line for an error of the operating system about a path that the user can fix, else None: an OSError
  (FILENAME[ -> FILENAME2]: STRERROR), or a library's error that carries one (tensorstore's ValueError with
  os_error_code='N', orbax's and JAX's wrapping of either), looked for along the explicit causes (`raise X from E`)
  only: an error raised while another was being handled is not caused by it, and stays a bug."""
  seen: set[int] = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    number, names = None, []
    if isinstance(error, OSError):
      number, names = error.errno, [error.filename, error.filename2]
    elif isinstance(error, Exception):
      found = re.search(r"os_error_code='?(\d+)", str(error))
      number = int(found[1]) if found else None
      names = re.findall(r'"(/[^"]+)"', str(error))[:1]
    if number in USER_ERRNOS:
      where = " -> ".join(os.fsdecode(n) for n in names if n not in (None, ""))
      line = f"{where}: {os.strerror(number)}" if where else os.strerror(number)
      if number in WRITES:
        line += " (a write failed: make room, then run the same command again)"
      return line
    error = error.__cause__
  return None


def _user_error(name: str, message: str, error: BaseException, debug: bool) -> int:
  if debug:
    _print_traceback(error)
  sys.stderr.write(f"itjax {name}: error: {message}\n")  # one write: a line no other thread's output splits
  if isinstance(error, CheckpointNotWritten):  # orbax's writer threads failed with it, and would print tracebacks
    sys.stderr.flush()                         # while Python shuts down around them: leave at once
    os._exit(1)
  return 1


def _run(command: Command, args: list[str], debug: bool) -> int | None:
  """Parses the command's flags, checks what can be checked before any work, and runs it."""
  name = command.name
  try:
    _load_config_file(command, args)
    fv, positional, code = _parse(command, args, debug)
    if fv is None:
      return code
    debug = debug or fv.debug
    _logging(fv.verbosity)
    _apply_aliases(command, fv)
    _check_config(command, fv)
    _check_chat_template(command, fv)  # before any model loads
    return command.run(fv, positional)
  except UserError as e:
    return _user_error(name, str(e), e, debug)
  except KeyboardInterrupt as e:
    if debug:
      _print_traceback(e)
    print(f"itjax {name}: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # not the input's fault, unless the system says a path is: keep what is needed to find it
    line = os_error_line(e)
    if line is not None:
      return _user_error(name, line, e, debug)
    if debug:
      _print_traceback(e)
    else:
      traceback.print_exc()
    print(f"itjax {name}: this is a bug in itjax, not a problem with the input; please report it with the "
          "traceback above", file=sys.stderr)
    return 70


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
  return _run(command, rest, _debug_env() or "--debug" in rest)  # --debug before the parse: its own errors


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
