"""The one kind of error that is the user's to fix: bad input, a missing file, a wrong flag or config value.

`itjax` prints a `UserError` as one line and exits 1; any other exception is a bug in itjax and keeps its traceback.
The subclasses are also the built-in exception a caller would expect (a missing file is a `FileNotFoundError` too).
"""

from __future__ import annotations


def brief(error: BaseException, limit: int = 300) -> str:
  """`Type: message` on one line, at most `limit` characters: a library's error inside one of ours."""
  return " ".join(f"{type(error).__name__}: {error}".split())[:limit]


class UserError(ValueError):
  """Input that itjax cannot use; the message names the file (and line), flag or config key, and what was expected."""


class InputNotFound(UserError, FileNotFoundError):
  """A named input (model, data, checkpoint, prompts) does not exist."""


class OutputExists(UserError, FileExistsError):
  """An output would overwrite something that is there."""


class MissingEntry(UserError, KeyError):
  """A file lacks an entry it must have (a tensor of a checkpoint)."""

  def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
    return str(self.args[0]) if self.args else ""


class MissingDependency(UserError, ImportError):
  """An optional extra that the requested feature needs is not installed."""


class NonFinite(UserError, FloatingPointError):
  """Training produced a non-finite value (most often a learning rate too high for the data)."""


class CheckpointNotWritten(UserError):
  """A save failed in the filesystem (a full disk, a quota, a file size limit, a read-only mount)."""
