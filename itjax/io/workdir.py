"""Workdirs in a bucket (gs://BUCKET/...), so that a preempted slice resumes from where it stopped.

Checkpoints are written to the bucket directly (orbax writes gs:// paths). The run's other files (metrics.jsonl,
config.json, TensorBoard events, the loss plot, generated tasks and replay answers) are written to a local mirror
and copied to the bucket after every checkpoint save and at the end; a run that starts on a bucket workdir first
replaces its mirror with the bucket's copy. The bucket therefore never holds metrics older than its newest
checkpoint, and a resume rewrites any steps logged after it, as on a local disk. Each process has its own mirror;
process 0 uploads, and files that every process reads (tasks, replay) are downloaded by the others after it did.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil

from etils import epath

from itjax.errors import UserError

CHECKPOINTS = ("checkpoints", "best")  # orbax's own, in the bucket; never mirrored


def is_remote(workdir: str) -> bool:
  return "://" in workdir


def exists(path: str, *parts: str) -> bool:
  """Whether PATH/PARTS exists, on a local disk or in a bucket."""
  if is_remote(path):
    return epath.Path(path).joinpath(*parts).exists()
  return os.path.exists(os.path.join(path, *parts))  # as os.path has it: '' does not exist


def has_checkpoints(path: str) -> bool:
  """Whether PATH is a training workdir with at least one entry in its checkpoints directory."""
  checkpoints = epath.Path(path) / "checkpoints"
  return checkpoints.is_dir() and any(True for _ in checkpoints.iterdir())


def mirror_root() -> str:
  return os.environ.get("ITJAX_MIRROR_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "itjax", "workdirs")


def local(workdir: str) -> str:
  """Where the run's files are written: the workdir itself, or a bucket workdir's mirror for this process."""
  if not is_remote(workdir):
    return workdir
  where = re.sub(r"^(\w+)://", r"\1/", workdir).strip("/")  # gs://b/runs/x -> gs/b/runs/x
  return os.path.join(mirror_root(), where, f"process{_process()}")


def _process() -> int:
  import jax
  return jax.process_index()


def _files(root: epath.Path, under: str = ""):
  """(relative path, Path) of every file below root/under, checkpoints excluded."""
  top = root / under if under else root
  if not top.exists():
    return
  stack = [top]
  while stack:
    for entry in stack.pop().iterdir():
      relative = os.path.relpath(os.fspath(entry), os.fspath(root))
      if relative.split(os.sep)[0] in CHECKPOINTS:
        continue
      if entry.is_dir():
        stack.append(entry)
      else:
        yield relative, entry


def _copy(source: epath.Path, target: epath.Path) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_bytes(source.read_bytes())


def upload(directory: str, remote: str) -> None:
  """Copies every file below a local directory to the same place below `remote` (a bucket path)."""
  for relative, source in _files(epath.Path(directory)):
    _copy(source, epath.Path(remote) / relative)


def unwritable(directory: str) -> str | None:
  """Why this process cannot create files in an existing directory, or None."""
  if os.access(directory, os.W_OK | os.X_OK):
    return None
  try:
    read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
  except OSError:
    read_only = False
  return "read-only file system" if read_only else "permission denied"


def check_writable(path: str, flag: str = "--workdir") -> None:
  """Stops with one line, before any work, when a local directory that a run writes (made if missing) cannot be:
  a file is where it or a directory above it should be, a name is too long, or the nearest existing directory above
  it does not take new files. Bucket paths are the bucket's to judge."""
  if not path or is_remote(path):
    return
  if os.path.isfile(path):
    raise UserError(f"{flag} {path} is a file; expected a directory")
  longest = max(len(os.fsencode(part)) for part in path.split(os.sep))
  here = os.path.abspath(path)
  while not os.path.isdir(here):
    if os.path.exists(here):
      raise UserError(f"{flag} {path}: {here} is a file, not a directory")
    here = os.path.dirname(here)
  try:
    limit = os.pathconf(here, "PC_NAME_MAX")
  except (OSError, ValueError):
    limit = 255
  if longest > limit:
    raise UserError(f"{flag} {path}: a name in it is too long ({longest} bytes; the file system allows {limit})")
  reason = unwritable(here)
  if reason:
    raise UserError(f"{flag} {path}: cannot write in {here} ({reason})")


def prepare(workdir: str) -> str:
  """The local directory for the run's files; for a bucket workdir, its mirror holding the bucket's copy."""
  path = local(workdir)
  if is_remote(workdir):
    shutil.rmtree(path, ignore_errors=True)  # the bucket is the truth: nothing stale from an earlier run here
    pull(workdir)
  os.makedirs(path, exist_ok=True)
  return path


_LOCKS: dict[str, int] = {}  # workdir's real path -> the open descriptor holding its lock


def lock(workdir: str) -> None:
  """Takes an exclusive advisory lock on a local workdir (the directory itself; no file is written) for this
  process, until `unlock` or the process ends (a killed process frees it); UserError when another process holds it,
  so two runs never write one workdir. Taking it again in the same process is a no-op. A bucket workdir, or a file
  system without locks, is not locked."""
  path = os.path.realpath(workdir)
  if is_remote(workdir) or path in _LOCKS or not os.path.isdir(path):
    return
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    raise UserError(f"{workdir}: another process is training in this workdir; wait for it to end (or stop it: it "
                    "saves a checkpoint to resume from), or train into another --workdir") from None
  except OSError:  # no locks on this file system
    os.close(fd)
    return
  _LOCKS[path] = fd


def unlock(workdir: str) -> None:
  fd = _LOCKS.pop(os.path.realpath(workdir), None)
  if fd is not None:
    os.close(fd)


def pull(workdir: str, under: str = "") -> None:
  mirror = epath.Path(local(workdir))
  for relative, source in _files(epath.Path(workdir), under):
    _copy(source, mirror / relative)


_pushed: dict[str, tuple[int, int]] = {}  # local file -> (size, mtime_ns) when it was last uploaded


def push(workdir: str, under: str = "") -> int:
  """Copies the mirror's new or changed files to the bucket (process 0 only); returns how many."""
  from itjax.io import distributed  # here: itjax.sweep reads this module without starting JAX
  if not is_remote(workdir) or not distributed.primary():
    return 0
  remote, count = epath.Path(workdir), 0
  for relative, source in _files(epath.Path(local(workdir)), under):
    stat = os.stat(source)
    key = os.fspath(source)
    if _pushed.get(key) == (stat.st_size, stat.st_mtime_ns):
      continue
    _copy(source, remote / relative)
    _pushed[key] = (stat.st_size, stat.st_mtime_ns)
    count += 1
  return count


def share(workdir: str, under: str) -> None:
  """After process 0 wrote WORKDIR/UNDER: every process can read it (for a bucket: uploaded, then downloaded)."""
  from itjax.io import distributed
  push(workdir, under)
  distributed.barrier(f"{under} written")
  if is_remote(workdir) and not distributed.primary():
    pull(workdir, under)
