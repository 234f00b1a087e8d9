"""The forgetting suite's default general text: real public-domain English prose, not written for the purpose.

*Botchan (Master Darling)* by Natsume Soseki, in Yasotaro Morri's English translation (1919; Project Gutenberg
EBook #8868), as the SentencePiece project ships it for its tests (`test/botchan.txt` in the sentencepiece 0.2.3
source distribution on PyPI; sentencepiece is already an itjax dependency). `default_path()` downloads that archive
once (3.7 MB; its sha256 is pinned, and nothing in it is built or run), takes the file out, keeps the body between
the Project Gutenberg START and END lines (about 270 KB, 47,000 words; licence text dropped) with Unix line ends,
and caches it. Pass `--text FILE` to use another text, or where PyPI is out of reach.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import urllib.request

from itjax.io import demo_model

URL = ("https://files.pythonhosted.org/packages/54/83/0664683546ffca8e36653d39d6217c361d931953f40ce28210b56927a9b6/"
       "sentencepiece-0.2.3.tar.gz")
ARCHIVE_SHA256 = "21618ad31f0453a1ebf5ec58defed99758d54af0b670546ecac639ddd8b86fbd"
MEMBER = "sentencepiece-0.2.3/test/botchan.txt"
MEMBER_SHA256 = "464bd5300c24fce16fcc4555d4231a57632caae4d0090ad6aa92854a3b227ba7"
START = "*** START OF THIS PROJECT GUTENBERG EBOOK BOTCHAN (MASTER DARLING) ***"
END = "*** END OF THIS PROJECT GUTENBERG EBOOK BOTCHAN (MASTER DARLING) ***"
NAME = "botchan.txt"


def body(raw: bytes) -> str:
  """The book without Project Gutenberg's header, end line and licence, with Unix line ends."""
  lines = raw.decode("utf-8-sig").replace("\r\n", "\n").split("\n")
  start, end = lines.index(START), lines.index(END)
  kept = lines[start + 1:end]
  if kept and kept[-1].startswith("End of Project Gutenberg"):
    kept = kept[:-1]
  return "\n".join(kept).strip() + "\n"


def _download(url: str) -> bytes:
  try:
    with urllib.request.urlopen(url, timeout=120) as response:
      return response.read()
  except OSError as e:
    raise RuntimeError(f"could not download the default general text ({url}: {e}); pass --text FILE "
                       "(config: eval.text) to use a local one") from None


def default_path(directory: str | None = None) -> str:
  """The cached default text, fetched and checked on first use."""
  directory = os.path.join(directory or demo_model.cache_dir(), "texts")
  target = os.path.join(directory, NAME)
  if os.path.exists(target):
    return target
  data = _download(URL)
  got = hashlib.sha256(data).hexdigest()
  if got != ARCHIVE_SHA256:
    raise RuntimeError(f"{URL}: sha256 {got} does not match the expected {ARCHIVE_SHA256}")
  with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
    raw = archive.extractfile(MEMBER).read()  # read as bytes only: nothing is written from the archive's paths
  if hashlib.sha256(raw).hexdigest() != MEMBER_SHA256:
    raise RuntimeError(f"{MEMBER}: sha256 does not match the expected {MEMBER_SHA256}")
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{NAME}.")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(body(raw))
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return target
