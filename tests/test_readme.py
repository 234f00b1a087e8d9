"""README.md as documentation: short enough to read, its links lead somewhere, and its Python examples run as written.

Every ```python block runs on its own (`python -c BLOCK`) in a fresh, empty directory that holds only the SmolLM2
GGUF as `model.gguf`, as a reader runs it after `itjax fetch-demo-model`: no block may lean on another's files or on
paths into the repository. A block fenced as ```python notest is left out; that is for what cannot run offline here
(a gs:// bucket, a TPU slice), and its first line should say why.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
MAX_WORDS = 3000
TIMEOUT_S = 300  # per block; the longest (train, evaluate, export) takes about 1.5 minutes on 2 busy CPU cores
# What the README shows that is not made by editing it: the demo's before/after chart, committed from a demo run
# (`itjax demo` draws it as runs/demo/before_after.png).
PRODUCED_ELSEWHERE = {"docs/demo_before_after.png"}
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _text() -> str:
  with open(README, encoding="utf-8") as f:
    return f.read()


def python_blocks() -> list[tuple[int, list[str], str]]:
  """(README line of the opening fence, the words after `python` on it, the code) of every ```python block."""
  text = _text()
  return [(text.count("\n", 0, m.start()) + 1, m.group(1).split(), m.group(2)) for m in FENCE.finditer(text)]


def _name(line: int, code: str) -> str:
  """How a failure names a block: its README line, its first line and, when that is an import, its first other line."""
  lines = [s for s in code.splitlines() if s.strip()]
  first = lines[0] if lines else ""
  other = next((s for s in lines if not s.startswith(("import ", "from "))), "")
  return f"README.md:{line}, the block starting {first!r}" + (f" ... {other.strip()!r}" if other != first else "")


def test_the_readme_is_at_most_3000_words():
  words = len(_text().split())
  assert words <= MAX_WORDS, (f"README.md has {words} words, more than {MAX_WORDS}: move measurements and long notes "
                              "to experiments/results/readme_measurements.md")


def test_every_python_block_holds_code():
  blocks = python_blocks()
  assert blocks, "README.md has no ```python block"
  empty = [line for line, _, code in blocks if not code.strip()]
  assert not empty, f"empty ```python blocks at README.md lines {empty}"
  for line, words, code in blocks:
    compile(code, _name(line, code), "exec")  # a syntax error fails here, before anything slow runs
    assert words in ([], ["notest"]), f"README.md:{line}: unknown fence words {words} (only 'notest' is known)"


def _docs() -> list[str]:
  """README.md and the Markdown files of experiments/ (the findings and their results), relative to the root."""
  out = ["README.md"]
  for folder, _, files in os.walk(os.path.join(ROOT, "experiments")):
    out += sorted(os.path.relpath(os.path.join(folder, f), ROOT) for f in files if f.endswith(".md"))
  return out


@pytest.mark.parametrize("doc", _docs())
def test_links_and_images_lead_to_files(doc):
  missing = []
  with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
    text = f.read()
  for target in LINK.findall(text):
    if re.match(r"[a-z]+:", target) or target.startswith("#"):
      continue  # a web address or an anchor
    path = os.path.normpath(os.path.join(os.path.dirname(doc), target.split("#")[0]))
    if target.split("#")[0] and not os.path.exists(os.path.join(ROOT, path)) and path not in PRODUCED_ELSEWHERE:
      missing.append(target)
  assert not missing, (f"{doc} links to files that do not exist: {missing} (a file that another step produces "
                       "belongs in PRODUCED_ELSEWHERE)")


def _runnable():
  for line, words, code in python_blocks():
    marks = [pytest.mark.skip(reason="fenced as notest")] if "notest" in words else []
    yield pytest.param(line, code, id=f"README.md:{line}", marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("line, code", list(_runnable()))
def test_the_python_example_runs_as_written(line, code, smollm2_gguf, tmp_path, tmp_path_factory):
  """`python -c BLOCK` in an empty directory holding model.gguf exits 0. The blocks share JAX's persistent
  compilation cache (one directory for the session's workers), so a program two blocks compile is compiled once."""
  model = tmp_path / "model.gguf"
  try:
    model.symlink_to(smollm2_gguf)
  except OSError:  # a filesystem without symlinks
    import shutil
    shutil.copyfile(smollm2_gguf, model)
  try:
    cache = tmp_path_factory.getbasetemp().parent / "readme_jax_cache"
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=TIMEOUT_S, env={**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache)})
  except subprocess.TimeoutExpired as e:
    tail = (e.stderr or b"")[-3000:]
    tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
    pytest.fail(f"{_name(line, code)} ran past {TIMEOUT_S} s; its stderr ended:\n{tail}")
  assert ran.returncode == 0, (f"{_name(line, code)} exited with status {ran.returncode}; its stderr ended:\n"
                               f"{ran.stderr[-3000:]}")
