"""A model under evaluation (`Subject`), how it answers chats, and what a suite returns (`SuiteOutput`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: suite modules load without JAX (itjax.evals.registry)
  from itjax.model.generate import Generated, Generator


@dataclasses.dataclass(frozen=True)
class Settings:
  max_new_tokens: int = 256
  batch_size: int = 16  # decode slots
  seed: int = 0
  limit: int | None = None  # examples per suite (per split for tasks)
  progress: bool = True


@dataclasses.dataclass
class SuiteOutput:
  metrics: dict[str, float]  # flat: 'prompt_strict', 'type/sort_words', ...
  rows: list[dict]  # one per example: the input record's fields plus 'response' and each check's verdict
  bars: dict[str, float] = dataclasses.field(default_factory=dict)  # what the suite's plot shows per group
  note: str | None = None  # what the metrics leave out, and why (written into results.json and report.md)


@dataclasses.dataclass
class Subject:
  """One model: its config (a config with `lora` applies the adapters at run time), params and tokenizer.

  `unroll` decodes with unrolled layers (a per-layer copy of the weights, faster on CPU); False decodes the scanned
  layout in place, which training uses on accelerators so that evaluation holds no second copy of the model.
  `is_base` says it computes exactly what the 'base' subject beside it does (training before its first step, the
  adapters still zero): a suite may take the base's answers for its own. `cache` keeps what suites computed from
  these params (the forgetting suite's base answers, between evaluations during training); new params empty it."""
  label: str
  config: object
  params: dict
  tokenizer: object
  template: str | None = None
  unroll: bool = True
  is_base: bool = False
  cache: dict = dataclasses.field(default_factory=dict, repr=False)
  _generator: Generator | None = dataclasses.field(default=None, repr=False)

  @property
  def generator(self) -> Generator:
    from itjax.model.generate import Generator
    if self._generator is None:
      self._generator = Generator(self.config, self.params, self.tokenizer.eos_ids, self.tokenizer.pad_id,
                                  unroll=self.unroll)
    return self._generator

  def set_params(self, params) -> None:
    """New values for the same params (training's live ones): the generator and its compiled functions stay."""
    self.params = params
    self.cache.clear()
    if self._generator is not None:
      self._generator.set_params(params)

  def encode(self, chats: list[list[dict]]) -> list[list[int]]:
    return [self.tokenizer.encode_chat(m, add_generation_prompt=True, template=self.template) for m in chats]

  def generate(self, prompts: list[list[int]], settings: Settings, desc: str,
               batch_size: int | None = None, reuse: bool = False) -> list[Generated]:
    """Greedy answers (token ids) to encoded prompts, with a progress bar (prompts/s, tokens/s, ETA). `reuse`: take
    the answers this subject already gave with these params and settings to the same prompts (generated with
    `reuse` too), and generate only the others; suites that ask the same prompts (the forgetting suite's general
    prompts, which the judge suite answers too) then decode them once. Timed suites never reuse."""
    if not reuse:
      return self._generate(prompts, settings, desc, batch_size)
    kept = self.cache.setdefault("answers", {})
    keys = [(tuple(p), settings.max_new_tokens, settings.seed) for p in prompts]
    missing = list(dict.fromkeys(k for k in keys if k not in kept))
    if missing:
      kept.update(zip(missing, self._generate([list(k[0]) for k in missing], settings, desc, batch_size)))
    return [kept[k] for k in keys]

  def _generate(self, prompts, settings: Settings, desc: str, batch_size: int | None) -> list[Generated]:
    from itjax.model.generate import generate_with_progress
    return generate_with_progress(self.generator, prompts, settings.max_new_tokens, batch_size=batch_size or
                                  settings.batch_size, seed=settings.seed, progress=settings.progress,
                                  desc=f"{desc} ({self.label})")

  def respond(self, chats: list[list[dict]], settings: Settings, desc: str,
              reuse: bool = False) -> tuple[list[str], list[int]]:
    """(decoded responses, generated token counts) for chats ending with a user turn; `reuse` as in generate."""
    outs = self.generate(self.encode(chats), settings, desc, reuse=reuse)
    return [self.tokenizer.decode(o.tokens) for o in outs], [len(o.tokens) for o in outs]
