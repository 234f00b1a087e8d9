"""Files written whole or not at all: into a temp file beside the target, then renamed over it."""

from __future__ import annotations

import os


def save(path: str, saver) -> None:
  """`saver(temp_path)`, then the temp file renamed over `path`; on any error (Ctrl-C too) the temp file goes."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    saver(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, write) -> None:
  """A UTF-8 text file that `write(f)` fills, written whole or not at all."""
  def saver(tmp: str) -> None:
    with open(tmp, "w", encoding="utf-8") as f:
      write(f)
  save(path, saver)


def write_records(path: str, records: list[dict], what: str = "records", elsewhere: str = "another directory") -> str:
  """Records as JSONL at `path`, written whole; a file already there is kept when it holds these records and is an
  error naming `what` and `elsewhere` when it holds others (never overwritten). Returns the path."""
  import json
  from itjax.errors import OutputExists
  text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      if f.read() != text:
        raise OutputExists(f"{path} holds other {what} than the ones given: use {elsewhere}")
    return path
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_text(path, lambda f: f.write(text))
  return path


def write_json(path: str, value) -> None:
  """`value` as indented UTF-8 JSON with a final newline, written whole or not at all."""
  import json
  write_text(path, lambda f: (json.dump(value, f, ensure_ascii=False, indent=2), f.write("\n")))


def save_png(path: str, fig, dpi: int = 110) -> str:
  """A matplotlib figure as a PNG, written whole or not at all; the figure is closed either way."""
  import matplotlib.pyplot as plt
  try:
    save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
  finally:
    plt.close(fig)
  return path
