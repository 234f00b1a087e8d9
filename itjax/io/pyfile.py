"""Python files that a user hands to itjax (training configs, sweep experiments), run as modules; whatever stops
one from running (no such file, a directory, no permission, a syntax error, an exception it raises) is one
UserError naming the file and, where there is one, the line."""

from __future__ import annotations

import importlib.util
import os
import traceback
import types

from itjax.errors import InputNotFound, UserError


def check_readable(path: str, what: str) -> None:
  """Stops with one line unless `path` is a file this process can read."""
  if not os.path.exists(path):
    raise InputNotFound(f"{path}: no such {what}" + (" (a name in it is too long)" if _too_long(path) else ""))
  if os.path.isdir(path):
    raise UserError(f"{path} is a directory; expected the {what} (a .py file)")
  if not os.access(path, os.R_OK):
    raise UserError(f"{path}: cannot read the {what} (permission denied)")


def _too_long(path: str) -> bool:
  return any(len(os.fsencode(part)) > 255 for part in path.split(os.sep))


def _line(error: BaseException, path: str) -> str:
  """`path:LINE` of the deepest frame of the traceback that runs in the file, else `path`."""
  lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
           if f.filename and os.path.abspath(f.filename) == os.path.abspath(path)]
  return f"{path}:{lines[-1]}" if lines else path


def said(error: BaseException) -> str:
  """An exception as one line: a ValueError's or TypeError's own message (the usual way a file says 'not this
  argument'), any other with its type in front."""
  text = " ".join(str(error).split())
  if type(error) in (ValueError, TypeError) and text:
    return text
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run(path: str, what: str, name: str | None = None) -> types.ModuleType:
  """The file run as a module named `name` (default: the file's name without .py)."""
  check_readable(path, what)
  name = name or os.path.splitext(os.path.basename(path))[0] or "module"
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise UserError(f"{path}: not a Python file (a {what} is a .py file)")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    where = f"{e.filename or path}:{e.lineno}" if e.lineno else path
    raise UserError(f"{where}: syntax error ({e.msg})") from e
  except OSError as e:
    raise UserError(f"{path}: cannot read the {what} ({e.strerror or e})") from e
  except Exception as e:  # the file's own code failed: the user's to fix, with the line it failed at
    raise UserError(f"{_line(e, path)}: the {what} raised {said(e)}") from e
  return module


def call(path: str, module: types.ModuleType, function: str, *args):
  """`module.function(*args)`; an exception it raises is one UserError naming the file (and line)."""
  fn = getattr(module, function, None)
  if not callable(fn):
    raise UserError(f"{path}: no {function}() in it")
  try:
    return fn(*args)
  except Exception as e:
    raise UserError(f"{_line(e, path)}: {said(e)}") from e
