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
