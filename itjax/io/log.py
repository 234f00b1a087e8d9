"""Library messages: `itjax.*` loggers print plain lines to stderr, from process 0 of a job only.

The `itjax` logger has one handler of its own, at INFO (what a run is doing: resuming, data mix, expected
duration), and does not pass its records on to the root logger, so JAX's and absl's logging settings neither hide nor
double them. Quieter: `logging.getLogger("itjax").setLevel(logging.WARNING)`. Lines go through tqdm, so they do not
break a progress bar.
"""

from __future__ import annotations

import logging
import sys

ROOT = "itjax"
_process = {"index": 0}  # set by itjax.io.distributed.initialize when a job has several processes


def set_process(index: int) -> None:
  _process["index"] = index


class _Stderr(logging.Handler):
  """Writes to the sys.stderr of the moment of each record (a test's capture, a redirected stream)."""

  def emit(self, record: logging.LogRecord) -> None:
    if _process["index"] > 0:
      return  # the other processes of a job compute the same messages
    try:
      from tqdm import tqdm
      tqdm.write(self.format(record), file=sys.stderr)
    except Exception:  # noqa: BLE001 -- logging must never take a run down
      self.handleError(record)


def get(name: str) -> logging.Logger:
  """The logger for module `name` (pass __name__), with the package's handler in place."""
  root = logging.getLogger(ROOT)
  if not any(isinstance(h, _Stderr) for h in root.handlers):
    root.addHandler(_Stderr())
    root.setLevel(logging.INFO)
    root.propagate = False
  return logging.getLogger(name)


_LEFTOVERS = ("Event loop is closed", "TensorStore", "OCDBT", "_read_array_index", "Encountered error while reading")


def _leftover(text: str) -> bool:
  return any(mark in text for mark in _LEFTOVERS)


class _DropLeftovers(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not _leftover(f"{record.getMessage()} {exc!r}")


_quiet = {"done": False}


def quiet_failed_reads() -> None:
  """After a checkpoint failed to restore, orbax leaves read tasks behind whose errors reach stderr later, some at
  exit: 'exception was never retrieved' records of the asyncio logger, 'Exception ignored' reports of abandoned
  coroutines, and TensorStore callbacks into orbax's closed event loop. Hundreds of lines that bury the one-line
  warning and say nothing it does not: from then on this process drops those three kinds (only those: any other
  error still prints)."""
  if _quiet["done"]:
    return
  _quiet["done"] = True
  logging.getLogger("asyncio").addFilter(_DropLeftovers())
  unraisable, excepthook = sys.unraisablehook, sys.excepthook

  def on_unraisable(u) -> None:
    if not _leftover(f"{u.exc_value!r} {u.object!r}"):
      unraisable(u)

  def on_exception(kind, value, tb) -> None:
    if not (kind is RuntimeError and _leftover(str(value))):
      excepthook(kind, value, tb)

  sys.unraisablehook, sys.excepthook = on_unraisable, on_exception
