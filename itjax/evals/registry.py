"""The evaluation suites by name: the one list that `itjax eval --suites`, config.eval.suites and the runners read.

Each suite registers itself where it is defined (`register(TheSuite())` in its module); itjax's own suites are the
modules of BUILTIN, imported on first use, and a suite defined elsewhere (a test, a user's module) is known once
its module has run `register`. Importing the registry and itjax's suite modules starts no JAX, so the names and
what a suite reports can be read without it.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING

from itjax.errors import UserError

if TYPE_CHECKING:
  from itjax.evals.suite import Suite

BUILTIN = ("ifeval", "tasks", "latency", "forgetting", "rigidity", "hallucination", "judge")  # modules itjax.evals.NAME
_suites: dict[str, Suite] = {}


def register(suite: Suite, replace: bool = False) -> Suite:
  """Makes `suite` known by its name; a name already taken needs replace=True. Returns the suite."""
  name = getattr(suite, "name", None)
  if not isinstance(name, str) or not re.fullmatch(r"[\w-]+", name):
    raise ValueError(f"a suite's name is letters, digits, '_' or '-' (it goes into --suites lists, file names and "
                     f"eval/NAME/METRIC keys), got {name!r}")
  if not isinstance(getattr(suite, "unit", None), str):
    raise ValueError(f"suite {name!r}: 'unit' (the y axis of its plot) must be a string")
  known = _suites.get(name)
  if known is not None and known is not suite and not replace:
    raise ValueError(f"suite {name!r} is already registered ({type(known).__module__}.{type(known).__qualname__}); "
                     "pass replace=True to replace it")
  _suites[name] = suite
  return suite


def _builtins() -> None:
  for name in BUILTIN:
    if name not in _suites:
      importlib.import_module(f"itjax.evals.{name}")  # registers it


def names(live: bool = False) -> tuple[str, ...]:
  """The known suites: itjax's own in BUILTIN order, then the others in the order they registered. live: only those
  that run inside training."""
  _builtins()
  ordered = list(BUILTIN) + [n for n in _suites if n not in BUILTIN]
  return tuple(n for n in ordered if not live or _suites[n].live_roles)


def get(name: str) -> Suite:
  """The suite registered as `name`; UserError naming the known ones otherwise."""
  if name not in _suites:
    _builtins()
  if name not in _suites:
    raise UserError(f"unknown suite {name!r}; known: {', '.join(names())}")
  return _suites[name]
