"""What an evaluation suite is: `Suite`, the one interface that `itjax eval` (itjax.evals.run) and training
(itjax.evals.live) run every suite through, and `Sources`, what a suite reads its records from.

A suite does two things. `read(sources)` reads (or generates) its records before any model loads, so that a bad
file stops a run early. `evaluate(subjects, records, settings)` answers and scores them and returns the outputs:
metrics, one row per example and the bars of its plot (a SuiteOutput). Subjects and outputs are keyed by role:

  model     the model under evaluation; always there
  base      its reference: `itjax eval --base SRC`, or a training workdir's base; in training, the frozen params with
            the adapters off (LoRA runs only)
  unmerged  `itjax eval` of a LoRA workdir: the tuned model with its adapters applied at run time, where 'model' has
            them merged into the kernels

`roles` says which of them `itjax eval` hands the suite (those it has) and `live_roles` which training hands it.
Most suites score each subject alone: they implement `answer(subject, records, settings)` and the default
`evaluate` asks every subject in turn. A suite that compares subjects (forgetting: the model against the base;
latency: merged against unmerged and base) implements `evaluate` itself; it still returns 'model' (and 'base' when
it reports the base's own figures), which is what results.json, report.md, SUITE.jsonl and SUITE.png show.

To add a suite:
  1. Subclass Suite: set `name` and `unit`, implement `read` and `answer` (or `evaluate`).
  2. Call `itjax.evals.registry.register(YourSuite())` where the class is defined (a suite of itjax itself is a
     module itjax/evals/NAME.py, listed in registry.BUILTIN).
  3. Optionally implement `itemize(output)`: each row's item key and its share of each metric (itjax.evals.items),
     so that experiments compare runs example by example and draw intervals over examples.
  4. Run it: `itjax eval --suites NAME`, or `config.eval.suites = ("NAME",)` in training; its metrics are written
     as eval/NAME/METRIC in metrics.jsonl and as the NAME table of `itjax eval`'s results.json and report.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from itjax.errors import UserError
from itjax.evals import paired
from itjax.evals.subject import Settings, Subject, SuiteOutput


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What the suites read besides --data: the forgetting suite's text, probes and counts, the rigidity suite's
  perturbations, the judge suite's judge."""
  text: str | None = None  # None: the default general text (itjax.evals.text)
  text_bytes: int | None = None  # evaluate the text's first N bytes (cut at a line break); None: all of it
  probes: str | None = None  # JSONL of extra probes (prompt, answer)
  perturbations: tuple[str, ...] | None = None  # None: all
  n_probes: int | None = None  # generated probes; None: `subset` of them, at most forgetting.N_PROBES
  n_general: int | None = None  # general prompts answered; None: `subset` of them (all when that is None)
  judge: str | None = None  # the judge suite's judge model; None: the base (itjax.evals.judge)
  judge_mode: str | None = None  # relevance (None) or pairwise
  judge_template: str | None = None  # pairwise: a template file; None: the built-in one
  # The subjects' chat template: a built-in name, a Jinja string or 'none' (each prompt as plain text after BOS, for
  # base models); None: a workdir's own (its training's), else the tokenizer's.
  chat_template: str | None = None


@dataclasses.dataclass
class Sources:
  """What suites read their records from: `itjax eval`'s flags, or training's config.eval. Records read through
  `once` are read once per run, so suites that share them (the task records of the tasks, forgetting, rigidity and
  latency suites) share one copy."""
  settings: Settings  # as `evaluate` gets them; settings.limit: examples per prompt set (per split for tasks)
  subset: int | None = None  # examples per prompt set of the suites that ask several sets (training's eval.subset)
  seed: int = 0  # generated records: the forgetting suite's probes, the hallucination suite's questions
  # A file per suite: --data SUITE=FILE or eval.data ('ifeval'); 'tasks': a tasks file, or the tasks directory of
  # a training workdir (itjax make-tasks).
  data: dict[str, str] = dataclasses.field(default_factory=dict)
  inputs: Inputs = Inputs()
  live: bool = False  # training: no 'tasks' means no task records (their suites do not run), not generated ones
  _read: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def limit(self) -> int | None:
    return self.settings.limit

  def once(self, key, read: Callable[[], Any]):
    """What `read()` returns, read on the first call with this key only."""
    if key not in self._read:
      self._read[key] = read()
    return self._read[key]


class Suite:
  """One evaluation suite (see the module's docstring); one instance, registered by name, serves every run."""
  name: ClassVar[str]  # --suites NAME; eval/NAME/METRIC in metrics.jsonl; NAME.jsonl and NAME.png of `itjax eval`
  unit: ClassVar[str]  # what its numbers are: the y axis of NAME.png, e.g. "accuracy (%)"
  # Headline metrics (no '/' in their names) that are not percentages (evals.png puts the others on a 0-100 axis).
  not_percent: ClassVar[frozenset[str]] = paired.NOT_PERCENT
  roles: ClassVar[tuple[str, ...]] = ("model", "base")  # the subjects `itjax eval` hands evaluate, of those it has
  live_roles: ClassVar[tuple[str, ...]] = ("model",)  # the same in training; (): the suite does not run there
  data: ClassVar[str] = ""  # what `--data NAME=FILE` holds for it; "": it reads no such file
  responses: ClassVar[str] = ""  # what `--responses FILE` holds for it (scored without a model); "": none

  def read(self, sources: Sources) -> Any:
    """The suite's records (any value `evaluate` understands), or None where it has nothing to run (training
    without a tasks directory, say); raises UserError naming the bad flag, key or file."""
    raise NotImplementedError

  def evaluate(self, subjects: dict[str, Subject], records, settings: Settings) -> dict[str, SuiteOutput]:
    """{role: output} of the subjects, which hold 'model' and those of `roles` (`live_roles` in training) that
    exist. By default each subject answers alone."""
    return {role: self.answer(subject, records, settings) for role, subject in subjects.items()}

  def answer(self, subject: Subject, records, settings: Settings) -> SuiteOutput:
    """One subject's output: what a suite that scores each subject alone implements."""
    raise NotImplementedError(f"the {self.name} suite implements neither answer nor evaluate")

  def base_state(self, base: Subject):
    """What this suite computed from the base subject and keeps with it (JSON-serialisable), for runs of the same
    base to read back (config.eval.base_cache); None: nothing worth keeping."""
    return None

  def restore_base_state(self, base: Subject, state) -> None:
    """Puts back what `base_state` returned (for the same base)."""

  def itemize(self, output: SuiteOutput) -> None:
    """Gives each row of `output` its `item` key and `scores` (itjax.evals.items), the per-example verdicts that
    compare runs item by item; by default rows get none (the suite's figures get intervals over seeds only)."""

  def score(self, records, responses: str) -> SuiteOutput:
    """The output for the responses of a file (`itjax eval --responses FILE`), for suites with `responses`."""
    raise UserError(f"--responses: the {self.name} suite scores only the answers of a model")
