"""Perturbation augmentation of training prompts (config.data.augment): the rigidity suite's own perturbations
(itjax.data.perturb: typos, casing, whitespace, reworded or reordered constraints, a system turn) applied to a share
of the task records of data.train, so that a model is trained on the kinds of input it is later tested under.

A task record (one with a `verifier`, as itjax make-tasks writes them) is perturbed with probability `rate`, by one
of `names` drawn for it; what is drawn depends only on (seed, the record's prompt), so runs and resumptions read the
same data. The answer is kept: the perturbations keep the task and what its verifier checks. A perturbation that
does not apply to a record (reordering without prompt_parts, a typo draw that edits nothing) leaves it as it is.
Records that are not task records pass unchanged.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Iterable

from itjax.data import perturb
from itjax.errors import UserError

# plain_template changes how the chat is rendered, not the prompt: it has no training-data form.
AUGMENTATIONS = tuple(p for p in perturb.PERTURBATIONS if p != "plain_template")


def check(names: Iterable[str], rate: float) -> tuple[str, ...]:
  names = tuple(names)
  unknown = [n for n in names if n not in AUGMENTATIONS]
  if unknown:
    raise UserError(f"config.data.augment: unknown perturbation {', '.join(map(repr, unknown))}; known: "
                    f"{', '.join(AUGMENTATIONS)}")
  if not 0 <= rate <= 1:
    raise UserError(f"config.data.augment_rate: must be in [0, 1], got {rate}")
  return names


@dataclasses.dataclass
class Augmenter:
  """Called on each raw record (a dict) of a training file; counts what it did."""
  names: tuple[str, ...]
  rate: float
  seed: int
  counts: Counter = dataclasses.field(default_factory=Counter)

  def __call__(self, record: dict) -> dict:
    if not self.names or not isinstance(record.get("verifier"), dict) or not isinstance(record.get("messages"), list):
      return record
    self.counts["task records"] += 1
    text = perturb.user_text(record)
    rng = random.Random(f"itjax-augment:{self.seed}:{text}")
    if rng.random() >= self.rate:
      return record
    name = rng.choice(self.names)
    changed = perturb.perturb(record, name, self.seed)
    if changed is None:
      self.counts["did not apply"] += 1
      return record
    self.counts[name] += 1
    answer = [m for m in record["messages"] if m["role"] == "assistant"]
    return {**record, "messages": changed["messages"] + answer, "augmented": name}

  def summary(self) -> str:
    done = sum(v for k, v in self.counts.items() if k in self.names)
    parts = ", ".join(f"{n} {self.counts[n]:,}" for n in self.names if self.counts[n])
    return (f"{done:,} of {self.counts['task records']:,} task records perturbed ({parts or 'none'}; "
            f"{self.counts['did not apply']:,} drawn for a perturbation that did not apply)")
