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
