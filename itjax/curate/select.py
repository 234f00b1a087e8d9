"""Selection for `itjax curate --select N`: `--by random` (seeded), and on the model to be tuned `--by quality` and
`--by diversity`.

quality    The instruction-following difficulty (IFD): the mean loss of the last response given the conversation
           before it, over its mean loss alone (after only a BOS, or an EOS where the tokenizer has none). Both
           losses cover the same targets: the response's tokens and its end-of-turn id. IFD < 1 means the
           instruction helps predict the response; near 1 it barely does (the pair teaches little instruction
           following); >= 1 it hurts (the response does not fit the instruction). The N highest below 1 are kept.
diversity  k-center greedy over each conversation's mean-pooled final hidden states (Euclidean): the first record
           in input order, then again and again the record farthest from everything chosen so far, so that every
           region of the data is covered before any is covered twice.
Both run batched with one compiled function per padded shape (itjax.evals.scoring), with a progress bar.
"""

from __future__ import annotations

import math
import random

import numpy as np

from itjax.errors import UserError
from itjax.evals import scoring


def _prefix(tokenizer) -> int:
  return tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_ids[0]


def ifd_sequences(tokenizer, messages: list[dict], template: str | None = None
                  ) -> tuple[list[int], int, list[int], int]:
  """(conditioned ids, where its response starts, response-alone ids, where that starts) for the last assistant
  turn of a chat."""
  last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
  if last is None or not any(m["role"] == "user" for m in messages[:last]):
    raise UserError("IFD needs a user turn followed by an assistant turn")
  prompt = tokenizer.encode_chat(messages[:last], add_generation_prompt=True, template=template)
  response = tokenizer.encode(messages[last]["content"], add_bos=False) + [tokenizer.eos_ids[0]]
  return prompt + response, len(prompt), [_prefix(tokenizer)] + response, 1


def ifd_scores(config, params, tokenizer, chats: list[list[dict]], template: str | None = None,
               progress: bool = True) -> list[float]:
  """IFD of each chat's last response: (its NLL given the conversation) / (its NLL alone), same tokens."""
  built = [ifd_sequences(tokenizer, m, template) for m in chats]
  desc = "IFD" if progress else None
  given = scoring.nll(config, params, [b[0] for b in built], [b[1] for b in built], tokenizer.pad_id,
                      desc and f"{desc} (given the instruction)")
  alone = scoring.nll(config, params, [b[2] for b in built], [b[3] for b in built], tokenizer.pad_id,
                      desc and f"{desc} (response alone)")
  return [g / a if a > 0 else float("inf") for (g, _), (a, _) in zip(given, alone)]


def k_center(points: np.ndarray, n: int) -> list[int]:
  """Indices of n points chosen by k-center greedy, starting from point 0; ties go to the lower index."""
  points = np.asarray(points, np.float64)
  if not 0 < n <= len(points):
    raise UserError(f"k_center: cannot choose {n} of {len(points)} points")
  chosen = [0]
  nearest = np.linalg.norm(points - points[0], axis=1)
  while len(chosen) < n:
    nearest[chosen] = -1.0  # never again
    far = int(np.argmax(nearest))
    chosen.append(far)
    nearest = np.minimum(nearest, np.linalg.norm(points - points[far], axis=1))
  return chosen


def embeddings(config, params, tokenizer, conversations: list[list[dict] | str], template: str | None = None,
               progress: bool = True) -> np.ndarray:
  """[N,D] mean-pooled final hidden states of each conversation as the model reads it (its chat template; a text
  record as plain text)."""
  ids = [tokenizer.encode(c) if isinstance(c, str) else
         tokenizer.encode_chat(c, add_generation_prompt=False, template=template) for c in conversations]
  return scoring.mean_hidden(config, params, ids, tokenizer.pad_id, "embeddings" if progress else None)


def select(items: list, n: int, by: str, seed: int, model=None, template: str | None = None,
           notes: list[str] | None = None) -> None:
  """Keeps n of the records not yet removed (curate.Item), marking the others `not_selected`: drawn at random
  (seeded), the n highest IFD below 1 ('quality'; fewer when fewer are below 1, and `notes` says so) or k-center
  greedy over `model`'s embeddings ('diversity'). `model` is a LoadedModel."""
  remaining = [item for item in items if item.reason is None]
  if n > len(remaining):
    raise UserError(f"--select {n}: only {len(remaining)} records remain after filters, dedup and "
                    f"decontamination (of {len(items)} read); expected at most {len(remaining)}")
  if by == "random":
    chosen = set(random.Random(seed).sample(range(len(remaining)), n))
  elif by == "quality":
    texts = [item.where for item in remaining if item.messages is None]
    if texts:
      raise UserError(f"--by quality scores responses to instructions; {texts[0]} is a text record "
                      f"({len(texts)} in all)")
    scores = ifd_scores(model.config, model.params, model.tokenizer, [item.messages for item in remaining], template)
    for item, score in zip(remaining, scores):
      item.ifd = score if math.isfinite(score) else None
    below = sorted((i for i, s in enumerate(scores) if s < 1), key=lambda i: (-scores[i], i))
    if len(below) < n and notes is not None:
      notes.append(f"--select {n} --by quality: only {len(below)} records have IFD < 1; kept those")
    chosen = set(below[:n])
  else:
    points = embeddings(model.config, model.params, model.tokenizer,
                        [item.messages if item.messages is not None else item.text for item in remaining], template)
    chosen = set(k_center(points, n))
  for i, item in enumerate(remaining):
    if i not in chosen:
      item.remove("not_selected")
