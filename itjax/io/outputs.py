"""The one rule for what a command writes, checked before any work starts.

- An output that exists is replaced only with `--overwrite` (or, for a resumable output, continued when what it
  records of its inputs and settings matches; the command compares that itself).
- An output may never be, contain, or sit inside an input or a workdir the command reads: not even with
  `--overwrite` (that would destroy what it is made from).
- An output that is a file where a directory is expected (or the reverse), or whose parent cannot be written, is
  a one-line error before anything runs.
- Files are written to a temporary name and renamed into place (`itjax.io.atomic`); directories too
  (`replace_dir`), so a stopped command leaves the old output or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable

from itjax.errors import OutputExists, UserError


def is_remote(path: str) -> bool:
  return "://" in path


def _real(path: str) -> str:
  return os.path.realpath(os.path.expanduser(path))


def _inside(inner: str, outer: str) -> bool:
  """Whether real path `inner` is `outer` or lies below it."""
  return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


# What a training workdir holds that commands read or that its run writes (io/workdir.py, training/resume.py): an
# output may sit inside a workdir (WORKDIR/eval, as `itjax sweep` writes it), but never in one of these.
WORKDIR_ENTRIES = ("checkpoints", "best", "previous", "data", "tasks", "replay", "config.json", "metrics.jsonl",
                   "tensorboard", "sweep.json", "sweep.log")


def _is_workdir(path: str) -> bool:
  return os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in ("checkpoints", "metrics.jsonl"))


def split(value: str | None) -> list[str]:
  """The paths of a comma-separated flag value: 'a.jsonl,b.jsonl', or 'SUITE=FILE,...' (the names dropped)."""
  if not value:
    return []
  return [part.split("=", 1)[-1] for part in value.split(",") if part.split("=", 1)[-1]]


def _check_read(out: str, real: str, flag: str, what: str, path: str) -> None:
  source = _real(path)
  if real == source:
    raise UserError(f"{flag} {out} is {what} {path}: write the output elsewhere (not even --overwrite replaces "
                    "an input)")
  if _inside(source, real):
    raise UserError(f"{flag} {out} contains {what} {path}: write the output elsewhere")
  if not (_inside(real, source) and os.path.isdir(source)):
    return
  if _is_workdir(source):
    entry = os.path.relpath(real, source).split(os.sep)[0]
    if entry not in WORKDIR_ENTRIES:
      return  # a place of its own inside the workdir, which no run reads or writes
    raise UserError(f"{flag} {out} is inside {what} {path} (its {entry}): write the output elsewhere")
  raise UserError(f"{flag} {out} is inside {what} {path}: write the output elsewhere")


def _writable_parent(out: str, flag: str) -> None:
  """The nearest existing ancestor of OUT must be a directory this process can write in."""
  parent = os.path.dirname(_real(out))
  while not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserError(f"{flag} {out}: {parent} is a file, not a directory")
  if not os.access(parent, os.W_OK | os.X_OK):
    readonly = hasattr(os, "statvfs") and os.statvfs(parent).f_flag & getattr(os, "ST_RDONLY", 1)
    raise UserError(f"{flag} {out}: cannot write in {parent} "
                    f"({'read-only file system' if readonly else 'permission denied'})")


def check(out: str, flag: str, *, reads: Iterable[tuple[str, str | None]] = (), overwrite: bool = False,
          directory: bool = False, resumable: bool = False) -> bool:
  """Stops with one line (a UserError) when `out`, given as `flag`, may not be written; returns whether it exists.

  reads: (what, path) of each input and workdir the command reads, e.g. ('--data', 'a.jsonl'); None paths are
  skipped, and a comma list is the caller's to `split`. OUT may lie inside a training workdir it reads, but not in
  one of its WORKDIR_ENTRIES. directory: OUT is a directory (an empty one that exists counts as absent).
  resumable: an existing OUT is returned as existing rather than refused (the caller compares its record of inputs
  and settings). An existing OUT that is neither a file nor a directory (a device, a pipe) is always refused.
  """
  out = os.fspath(out)
  if is_remote(out):
    return False
  real = _real(out)
  for what, path in reads:
    if path and not is_remote(os.fspath(path)):
      _check_read(out, real, flag, what, os.fspath(path))
  if os.path.lexists(out):
    if not os.path.isdir(out) and not os.path.isfile(out):
      raise UserError(f"{flag} {out} exists and is neither a file nor a directory: write the output elsewhere (not "
                      "even --overwrite replaces it)")
    if directory and not os.path.isdir(out):
      raise UserError(f"{flag} {out} is a file; expected a directory")
    if not directory and os.path.isdir(out):
      raise UserError(f"{flag} {out} is a directory; expected a file")
    if directory and not os.listdir(out):
      _writable_parent(os.path.join(out, "x"), flag)
      return False
    if resumable:
      return True
    if not overwrite:
      raise OutputExists(f"{flag} {out} exists; pass --overwrite to replace it, or choose another path")
  _writable_parent(out, flag)
  return os.path.lexists(out)


@contextlib.contextmanager
def replace_dir(out: str):
  """Yields a temporary directory beside OUT that becomes OUT when the block succeeds (an existing OUT is replaced
  then, not before) and is removed when it fails. Check OUT with `check` first: this replaces what is there."""
  out = os.path.abspath(out)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp-", dir=parent)
  try:
    yield tmp
    if not os.path.lexists(out):
      os.replace(tmp, out)
      return
    old = tempfile.mkdtemp(prefix=os.path.basename(out) + ".old-", dir=parent)
    os.rmdir(old)
    os.replace(out, old)
    try:
      os.replace(tmp, out)
    except BaseException:
      os.replace(old, out)  # the old output back where it was
      raise
    shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
