"""Batches for training: deterministic shuffling by seed, epochs, weighted mixtures, host shards, exact resume.

The first source is the primary: one epoch is one pass over it, in an order drawn from (seed, epoch). Every other
source contributes round(N0 * w_k / w0) examples per epoch, drawn from its own endless stream of reshuffled passes,
so "80% instructions + 20% text" holds in every epoch. An epoch's examples are packed (best-fit decreasing over the
whole epoch) and the rows shuffled; epochs follow each other in one stream of rows. Global batch b holds rows
[b*B, (b+1)*B), and process h of H takes its contiguous B/H of them, so every host takes the same number of steps
and their union is the epoch.

A source may be marked `anchor` (config.anchor.on='replay': self-replay or general examples): batches then carry
one more field, `anchor` [B, T], the weights of the tokens of its examples and zero elsewhere. The mark is not part
of the fingerprint: it changes what the loss weighs, not which rows come.

Everything is a pure function of (data, config, seed): the iterator state is the index of the next batch plus a
fingerprint of what produced it, so a restored pipeline yields exactly what the uninterrupted one would have.

Examples are tokenized in memory: instruction-tuning sets (thousands to a few hundred thousand examples) fit, and
the whole-epoch packing needs every length. Grain's packing transformations pack a stream greedily within a small
window; benchmarks/packing.py compares the efficiency.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json

import numpy as np

from itjax.data import packing
from itjax.errors import UserError

Example = tuple[np.ndarray, np.ndarray]  # (ids [N] int32, mask [N] bool)


@dataclasses.dataclass
class Source:
  name: str
  examples: list[Example]
  weight: float = 1.0
  anchor: bool = False  # its examples' trained tokens are marked in the batches' `anchor` field


def _rng(seed: int, *tags: int) -> np.random.Generator:
  return np.random.default_rng([seed, *tags])


class Pipeline:
  """An iterator of dicts of numpy arrays [batch_size / process_count, max_len] (see packing.FIELDS; and `anchor`
  when a source is marked)."""

  def __init__(self, sources: list[Source], max_len: int, batch_size: int, seed: int = 0,
               epochs: int | None = None, pack: bool = True, pad_id: int = 0,
               process_index: int | None = None, process_count: int | None = None):
    if not sources:
      raise UserError("no data sources")
    for s in sources:
      if not s.examples:
        raise UserError(f"data source {s.name}: no usable examples")
      if not s.weight > 0:
        raise UserError(f"data source {s.name}: weight must be > 0, got {s.weight}")
      longest = max(len(ids) - 1 for ids, _ in s.examples)
      if longest > max_len:
        raise UserError(f"data source {s.name}: an example fills {longest} slots > max_len {max_len}")
    if process_index is None or process_count is None:
      import jax
      process_index, process_count = jax.process_index(), jax.process_count()
    if batch_size % process_count:
      raise UserError(f"batch_size {batch_size} is not divisible by the {process_count} processes")
    if epochs is not None and epochs < 1:
      raise UserError(f"epochs must be >= 1 or None (endless), got {epochs}")
    self.sources, self.max_len, self.batch_size, self.seed = sources, max_len, batch_size, seed
    self.epochs, self.pack, self.pad_id = epochs, pack, pad_id
    self.process_index, self.process_count = process_index, process_count
    self.host_rows = batch_size // process_count
    n0, w0 = len(sources[0].examples), sources[0].weight
    self.per_epoch = [n0] + [max(1, round(n0 * s.weight / w0)) for s in sources[1:]]
    self._epoch_starts = [0]  # first global row of each epoch planned so far
    self._fingerprint: str | None = None
    self.epoch_rows = functools.lru_cache(maxsize=2)(self._epoch_rows)
    self._permutation = functools.lru_cache(maxsize=16)(self._new_permutation)
    self.batch = 0

  # ---- the plan: which examples go in which row -------------------------------------------------------------
  def _draw(self, k: int, epoch: int) -> list[tuple[int, int]]:
    """Source k's examples for an epoch: a slice of its stream of reshuffled passes."""
    n, take = len(self.sources[k].examples), self.per_epoch[k]
    out = []
    for j in range(epoch * take, (epoch + 1) * take):
      p, i = divmod(j, n)
      out.append((k, int(self._permutation(k, p)[i])))
    return out

  def _new_permutation(self, k: int, p: int) -> np.ndarray:
    return _rng(self.seed, 0, k, p).permutation(len(self.sources[k].examples))

  def _epoch_rows(self, epoch: int) -> list[list[tuple[int, int]]]:
    """The rows of an epoch, each a list of (source, example)."""
    items = [it for k in range(len(self.sources)) for it in self._draw(k, epoch)]
    if self.pack:
      lengths = [len(self.sources[k].examples[i][0]) - 1 for k, i in items]
      rows = [[items[j] for j in row] for row in packing.best_fit_decreasing(lengths, self.max_len)]
    else:
      rows = [[it] for it in items]
    order = _rng(self.seed, 1, epoch).permutation(len(rows))
    return [rows[r] for r in order]

  def mix(self) -> list[tuple[str, int, float]]:
    """(name, examples per epoch, share of an epoch's trained tokens) per source: the loss averages over trained
    tokens, so a source of long answers weighs more in it than its share of examples says."""
    trained = [self.per_epoch[k] * float(np.mean([m[1:].sum() for _, m in s.examples]))
               for k, s in enumerate(self.sources)]
    return [(s.name, self.per_epoch[k], trained[k] / sum(trained)) for k, s in enumerate(self.sources)]

  def efficiency(self, epoch: int = 0) -> float:
    """Fraction of an epoch's row slots that hold tokens (not padding)."""
    rows = self.epoch_rows(epoch)
    used = sum(len(self.sources[k].examples[i][0]) - 1 for row in rows for k, i in row)
    return used / (len(rows) * self.max_len)

  def _locate(self, row: int) -> tuple[int, int] | None:
    """(epoch, row within it) of a global row index; None past the last epoch."""
    while len(self._epoch_starts) < 2 or row >= self._epoch_starts[-1]:
      e = len(self._epoch_starts) - 1
      if self.epochs is not None and e >= self.epochs:
        break
      self._epoch_starts.append(self._epoch_starts[-1] + len(self.epoch_rows(e)))
    if row >= self._epoch_starts[-1]:
      return None
    e = bisect.bisect_right(self._epoch_starts, row) - 1
    return e, row - self._epoch_starts[e]

  # ---- iteration and state ----------------------------------------------------------------------------------
  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    first = self.batch * self.batch_size
    if self._locate(first) is None:
      raise StopIteration
    batch = packing.empty_rows(self.host_rows, self.max_len, self.pad_id)
    anchored = any(s.anchor for s in self.sources)
    if anchored:
      batch["anchor"] = np.zeros_like(batch["weights"])
    start = first + self.process_index * self.host_rows
    for r in range(self.host_rows):
      where = self._locate(start + r)
      if where is not None:  # past the last epoch: a pad row (weights 0)
        row = self.epoch_rows(where[0])[where[1]]
        packing.fill_row(batch, r, [self.sources[k].examples[i] for k, i in row],
                         [self.sources[k].anchor for k, _ in row] if anchored else None)
    self.batch += 1
    return batch

  def fingerprint(self) -> str:
    """A hash of everything the global batches depend on, except the batch index: the settings and the tokens, not
    where the files lie nor how many processes share a batch (a run resumes from moved data or on other hosts)."""
    if self._fingerprint is not None:
      return self._fingerprint
    h = hashlib.sha256(json.dumps([self.max_len, self.batch_size, self.seed, self.epochs, self.pack,
                                   self.pad_id]).encode())
    for s in self.sources:
      h.update(f"{s.weight}|{len(s.examples)}".encode())
      for ids, mask in s.examples:
        h.update(ids.tobytes())
        h.update(np.packbits(mask).tobytes())
    self._fingerprint = h.hexdigest()[:16]
    return self._fingerprint

  def get_state(self) -> dict:
    return {"batch": self.batch, "fingerprint": self.fingerprint()}

  def set_state(self, state: dict) -> None:
    if state.get("fingerprint") != self.fingerprint():
      raise UserError("data iterator state was saved by a pipeline over other data or settings "
                      f"(fingerprint {state.get('fingerprint')} != {self.fingerprint()})")
    self.batch = int(state["batch"])
