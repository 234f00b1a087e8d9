"""Records -> token ids and a loss mask built from token spans, never by searching the text for a response marker.

A chat is rendered with its template once per assistant turn: the text up to the generation prompt of turn i is a
prefix of the text up to the end of turn i, which is a prefix of the whole conversation. Those prefixes cut the
conversation into prompt and response pieces; each piece is tokenized on its own, so the prompt tokens of a turn
are exactly what `encode_chat(..., add_generation_prompt=True)` gives at inference, and the response tokens are what
the model must generate. A response piece is trained up to and including its last EOS token (the end-of-turn
token); what the template writes after it (a newline) is not. A template that ends an assistant turn without an EOS
id is an error: the model would never learn to stop.

`mask[t]` says whether token t is a target (predicted from the tokens before it); mask[0] is always False.
"""

from __future__ import annotations

import numpy as np

from itjax.data.formats import DataError, Record
from itjax.errors import UserError

TRAIN_ON = ("all", "last")  # train on every assistant turn, or only on the last one


def encode_chat(tokenizer, messages: list[dict], template: str | None = None, train_on: str = "all",
                where: str = "chat") -> tuple[np.ndarray, np.ndarray]:
  """(ids [N] int32, mask [N] bool) for a conversation ending with an assistant turn."""
  if train_on not in TRAIN_ON:
    raise UserError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
  render = lambda msgs, gen: tokenizer.render_chat(msgs, add_generation_prompt=gen, template=template)
  try:
    full = render(messages, False)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "last":
      turns = turns[-1:]
    pieces, cursor = [], 0  # (text, trained)
    for i in turns:
      prompt, turn = render(messages[:i], True), render(messages[:i + 1], False)
      if not (turn.startswith(prompt) and full.startswith(turn)) or len(prompt) < cursor:
        raise DataError(where, "template is not prefix-stable",
                        f"the text up to assistant turn {i} is not a prefix of the whole conversation")
      prompt_end, turn_end = len(prompt), len(turn)
      pieces += [(full[cursor:prompt_end], False), (full[prompt_end:turn_end], True)]
      cursor = turn_end
    pieces.append((full[cursor:], False))
  except DataError:
    raise
  except Exception as e:  # a template's own raise_exception, or a renderer error
    raise DataError(where, "chat template error", f"{type(e).__name__}: {e}") from None

  eos = set(tokenizer.eos_ids)
  ids, mask = [], []
  for k, (text, trained) in enumerate(pieces):
    piece = tokenizer.encode(text, add_bos=None if k == 0 else False) if (text or k == 0) else []
    if not trained:
      ids += piece
      mask += [False] * len(piece)
      continue
    ends = [j for j, t in enumerate(piece) if t in eos]
    if not ends:
      raise DataError(where, "assistant turn has no EOS token",
                      f"the template renders an assistant turn as {text[-40:]!r} with none of the EOS ids "
                      f"{sorted(eos)}; the model would never learn to stop")
    ids += piece
    mask += [True] * (ends[-1] + 1) + [False] * (len(piece) - ends[-1] - 1)
  if not any(mask[1:]):
    raise DataError(where, "empty loss mask", "no assistant token is trained")
  mask[0] = False
  return np.asarray(ids, np.int32), np.asarray(mask, bool)


def encode_text(tokenizer, text: str) -> tuple[np.ndarray, np.ndarray]:
  """General text: BOS (as the tokenizer adds it) + text + EOS, every token after the first a target."""
  if not tokenizer.eos_ids:
    raise UserError("the tokenizer has no EOS id to end text records with")
  ids = tokenizer.encode(text) + [tokenizer.eos_ids[0]]
  mask = np.ones(len(ids), bool)
  mask[0] = False
  return np.asarray(ids, np.int32), mask


def fit_length(ids: np.ndarray, mask: np.ndarray, max_len: int, policy: str,
               where: str) -> tuple[np.ndarray, np.ndarray, bool]:
  """An example of N tokens fills N-1 slots of a row (inputs are ids[:-1], targets ids[1:]).

  Longer ones are dropped, or truncated at the end (the prompt kept, the response cut). Returns (ids, mask, cut).
  """
  if len(ids) - 1 <= max_len:
    return ids, mask, False
  if policy == "drop":
    raise DataError(where, "longer than max_len", f"{len(ids) - 1} > {max_len} tokens")
  if policy != "truncate":
    raise UserError(f"length policy must be 'truncate' or 'drop', got {policy!r}")
  ids, mask = ids[:max_len + 1], mask[:max_len + 1]
  if not mask.any():
    raise DataError(where, "prompt longer than max_len", f"no trained token within {max_len} tokens")
  return ids, mask, True


def encode_record(tokenizer, record: Record, template: str | None = None,
                  train_on: str = "all") -> tuple[np.ndarray, np.ndarray]:
  if record.text is not None:
    return encode_text(tokenizer, record.text)
  return encode_chat(tokenizer, record.messages, template, train_on, record.where)
