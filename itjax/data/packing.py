"""Packing examples into fixed-length rows: best-fit decreasing bins, and the row arrays the model reads.

An example of N tokens fills N-1 slots: inputs ids[:-1], targets ids[1:], weights mask[1:]. Shifting before packing
means no target ever crosses into the next example. Each example in a row gets its own segment id (1, 2, ...) and
positions restarting at 0, so the model's segment-aware attention keeps the examples apart; pad slots have segment
0 and weight 0.
"""

from __future__ import annotations

import bisect

import numpy as np

FIELDS = ("inputs", "targets", "weights", "segment_ids", "positions")


def best_fit_decreasing(lengths: list[int] | np.ndarray, capacity: int) -> list[list[int]]:
  """Bins of indices: longest first, each into the fullest bin it fits (ties: the earliest bin). Deterministic."""
  order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
  rows: list[list[int]] = []
  free: list[tuple[int, int]] = []  # sorted (room left, row) of rows with room
  for i in order:
    n = int(lengths[i])
    if not 0 < n <= capacity:
      raise ValueError(f"example {i} has length {n}; expected 1..{capacity}")
    k = bisect.bisect_left(free, (n, -1))
    if k == len(free):
      rows.append([i])
      room, row = capacity - n, len(rows) - 1
    else:
      room, row = free.pop(k)
      rows[row].append(i)
      room -= n
    if room:
      bisect.insort(free, (room, row))
  return rows


def empty_rows(num_rows: int, max_len: int, pad_id: int) -> dict[str, np.ndarray]:
  batch = {f: np.zeros((num_rows, max_len), np.int32) for f in FIELDS}
  batch["weights"] = np.zeros((num_rows, max_len), np.float32)
  batch["inputs"][:] = pad_id
  batch["targets"][:] = pad_id
  return batch


def fill_row(batch: dict[str, np.ndarray], r: int, examples: list[tuple[np.ndarray, np.ndarray]],
             anchored: list[bool] | None = None) -> None:
  """Writes (ids, mask) examples one after another into row r of `batch`; with `anchored` (a flag per example),
  batch['anchor'] gets the weights of the flagged examples (the tokens a KL-to-base anchor weighs)."""
  start = 0
  for segment, (ids, mask) in enumerate(examples, start=1):
    n = len(ids) - 1
    end = start + n
    if end > batch["inputs"].shape[1]:
      raise ValueError(f"examples of {end} slots do not fit a row of {batch['inputs'].shape[1]}")
    batch["inputs"][r, start:end] = ids[:-1]
    batch["targets"][r, start:end] = ids[1:]
    batch["weights"][r, start:end] = mask[1:]
    batch["segment_ids"][r, start:end] = segment
    batch["positions"][r, start:end] = np.arange(n)
    if anchored is not None and anchored[segment - 1]:
      batch["anchor"][r, start:end] = mask[1:]
    start = end
