"""One face for the tokenizers itjax reads: HF tokenizer directories (and GGUF metadata) and SentencePiece models.

Chat prompts are rendered to text and encoded without automatic special tokens; a BOS is prepended only when the
tokenizer adds one by default and the rendered text did not already start with it (no double BOS).
"""

from __future__ import annotations

import json
import os
import re

from itjax.data import chat
from itjax.errors import InputNotFound


class Tokenizer:
  """Base class: subclasses provide `_encode_plain`, `decode`, the special ids and `chat_template`."""

  bos_id: int | None = None
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0
  add_bos: bool = False
  chat_template: str | None = None
  special_tokens: dict[str, str] = {}  # e.g. {'bos_token': '<s>', 'eos_token': '</s>'} for templates

  def _encode_plain(self, text: str) -> list[int]:
    raise NotImplementedError

  def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
    raise NotImplementedError

  @property
  def vocab_size(self) -> int:
    raise NotImplementedError

  def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
    """Text -> ids; special-token strings in the text become their ids. BOS as the tokenizer does by default."""
    ids = self._encode_plain(text)
    add_bos = self.add_bos if add_bos is None else add_bos
    if add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
      ids = [self.bos_id] + ids
    return ids

  def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, template: str | None = None) -> str:
    """The chat as text: `template` is a built-in name, a Jinja string, or None for the tokenizer's own template."""
    return chat.render(chat.resolve(template, self.chat_template), messages, add_generation_prompt,
                       **self.special_tokens)

  def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True,
                  template: str | None = None) -> list[int]:
    return self.encode(self.render_chat(messages, add_generation_prompt, template))


# Turn ends that a GGUF file does not list as its EOS: Gemma's <end_of_turn> closes every turn of its chat format
# (transformers' own Gemma files list it in generation_config.json instead).
TURN_ENDS = ("<end_of_turn>",)


def with_turn_ends(tok) -> HFTokenizer:
  """The tokenizer with TURN_ENDS that its added vocabulary holds as end-of-sequence ids too (GGUF files)."""
  return HFTokenizer(tok, extra_eos_ids=tuple(tok.added_tokens_encoder[t] for t in TURN_ENDS
                                              if t in tok.added_tokens_encoder))


class HFTokenizer(Tokenizer):
  """Wraps a transformers fast tokenizer (from a local directory or built from GGUF metadata)."""

  def __init__(self, tok, extra_eos_ids: tuple[int, ...] = ()):
    self.tok = tok
    self.bos_id = tok.bos_token_id
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    self.eos_ids = tuple(dict.fromkeys(eos + [i for i in extra_eos_ids if i is not None]))
    self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
    probe = tok("a").input_ids
    self.add_bos = self.bos_id is not None and bool(probe) and probe[0] == self.bos_id
    self.chat_template = tok.chat_template if isinstance(tok.chat_template, str) else None
    self.special_tokens = {k: v for k, v in (("bos_token", tok.bos_token), ("eos_token", tok.eos_token),
                                             ("unk_token", tok.unk_token), ("pad_token", tok.pad_token)) if v}

  @property
  def vocab_size(self) -> int:
    return len(self.tok)

  def _encode_plain(self, text: str) -> list[int]:
    return self.tok(text, add_special_tokens=False).input_ids

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

  def render_chat(self, messages, add_generation_prompt=True, template=None) -> str:
    if template is None and self.chat_template is not None:  # the tokenizer's own template, rendered by transformers
      chat.validate(messages)
      return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return super().render_chat(messages, add_generation_prompt, template)


class SentencePieceTokenizer(Tokenizer):
  """A raw SentencePiece `.model`; special pieces written in text (e.g. a template's `<s>`) map to their ids."""

  def __init__(self, path: str, add_bos: bool = True, chat_template: str | None = None):
    import sentencepiece as spm
    self.sp = spm.SentencePieceProcessor(model_file=path)
    sp = self.sp
    self.bos_id = sp.bos_id() if sp.bos_id() >= 0 else None
    self.eos_ids = (sp.eos_id(),) if sp.eos_id() >= 0 else ()
    self.pad_id = sp.pad_id() if sp.pad_id() >= 0 else (self.eos_ids[0] if self.eos_ids else 0)
    self.add_bos = add_bos and self.bos_id is not None
    self.chat_template = chat_template
    # Control pieces (<s>, </s>, ...) written in text map to their ids; user-defined pieces SentencePiece keeps whole.
    specials = [i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    self._special_ids = {sp.id_to_piece(i): i for i in specials if sp.id_to_piece(i)}
    names = sorted(self._special_ids, key=len, reverse=True)
    self._split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None
    self.special_tokens = {}
    for key, i in (("bos_token", self.bos_id), ("eos_token", self.eos_ids[0] if self.eos_ids else None),
                   ("unk_token", sp.unk_id())):
      if i is not None and i >= 0:
        self.special_tokens[key] = sp.id_to_piece(i)

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def _encode_plain(self, text: str) -> list[int]:
    if self._split is None:
      return self.sp.encode(text)
    ids: list[int] = []
    for part in self._split.split(text):
      if part in self._special_ids:
        ids.append(self._special_ids[part])
      elif part:
        ids.extend(self.sp.encode(part))
    return ids

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    ids = [int(i) for i in ids]
    if skip_special_tokens:
      ids = [i for i in ids if not (self.sp.is_control(i) or self.sp.is_unknown(i))]
    return self.sp.decode(ids)


def _generic_fast(path: str) -> bool:
  """Whether the directory holds a tokenizer.json whose config names the generic fast tokenizer class."""
  try:
    with open(os.path.join(path, "tokenizer_config.json")) as f:
      name = json.load(f).get("tokenizer_class")
  except (OSError, ValueError, AttributeError):
    return False
  return name in ("TokenizersBackend", "PreTrainedTokenizerFast") and os.path.exists(
      os.path.join(path, "tokenizer.json"))


def load_tokenizer_dir(path: str) -> HFTokenizer:
  """A local HF tokenizer directory (tokenizer.json / tokenizer_config.json); never reaches a hub."""
  files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
  if not any(os.path.exists(os.path.join(path, f)) for f in files):
    raise InputNotFound(f"{path}: no tokenizer files (expected one of {', '.join(files)})")
  if _generic_fast(path):  # the class AutoTokenizer would pick, without importing its registry (seconds a process)
    from transformers import PreTrainedTokenizerFast as Loader
  else:
    from transformers import AutoTokenizer as Loader
  tok = Loader.from_pretrained(path, local_files_only=True, trust_remote_code=False)
  extra: tuple[int, ...] = ()
  gen = os.path.join(path, "generation_config.json")
  if os.path.exists(gen):
    with open(gen) as f:
      eos = json.load(f).get("eos_token_id")
    extra = tuple(eos) if isinstance(eos, list) else (eos,)
  return HFTokenizer(tok, extra_eos_ids=extra)
