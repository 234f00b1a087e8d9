"""The package's architecture, checked on its sources (ast; nothing is imported, so no JAX): itjax's packages in
layers, each module importing only from its own layer or those below, no import circle between modules, and a top
level of a few entry modules beside the packages.

Every import of an itjax module counts: at the top of a file, inside a function, under `if TYPE_CHECKING:`.
Within one package (and between the packages of one layer) imports go either way, but never in a circle.
"""

from __future__ import annotations

import ast
import functools
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "itjax")

# The layers, bottom to top: a module may import from its own layer and the ones before it, never from a later one.
LAYERS = (
    ("itjax.errors", "itjax.io"),  # errors; files, JSONL, workdirs, processes, the demo model's download
    ("itjax.model",),  # model config, Llama, LoRA, generation
    ("itjax.data",),  # formats, tokenizer, chat templates, packing, the pipeline, task generators
    ("itjax.interop",),  # HF and GGUF in, HF and PEFT out, loading, orbax checkpoints
    ("itjax.evals",),  # the evaluation suites
    ("itjax.curate",),  # curate, select, report, distill
    ("itjax.training",),  # training config, step, optimizer, sharding, metrics and plots, plan, the loop
    ("itjax.sweep",),  # `itjax sweep`: experiment files, their runs, the summary
    ("itjax.demo",),  # `itjax demo`
    ("itjax", "itjax.cli"),  # the public API (itjax/__init__.py) and the command line
)
# What itjax/ holds besides the packages of LAYERS: the package's own file, the entry modules and the configs link.
ENTRIES = {"__init__.py", "cli", "cli.py", "demo.py", "errors.py", "configs"}
# A known violation, as (module, the higher module it imports), whose two checks are expected to fail until it is
# gone (the layer check, marked strict, then fails: set KNOWN = None). None now: issue 24 removed the last one
# (evals/live.py importing training.loop).
KNOWN = None


@functools.cache
def modules() -> dict[str, str]:
  """{module name: file} of every module under itjax/ (the configs link is data, not code)."""
  found = {}
  for directory, subdirs, files in os.walk(ROOT):
    subdirs[:] = sorted(d for d in subdirs if d != "__pycache__" and not os.path.islink(os.path.join(directory, d)))
    parts = ["itjax", *os.path.relpath(directory, ROOT).split(os.sep)] if directory != ROOT else ["itjax"]
    for name in sorted(files):
      if name.endswith(".py"):
        stem = name[:-len(".py")]
        found[".".join(parts if stem == "__init__" else [*parts, stem])] = os.path.join(directory, name)
  return found


def _is_package(module: str) -> bool:
  return modules()[module].endswith("__init__.py")


def _absolute(module: str, node: ast.ImportFrom) -> str | None:
  """The module a `from X import ...` names, relative imports resolved against `module`."""
  if not node.level:
    return node.module
  package = module.split(".") if _is_package(module) else module.split(".")[:-1]
  base = package[:len(package) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def _ours(name: str | None) -> bool:
  return name is not None and (name == "itjax" or name.startswith("itjax."))


@functools.cache
def imports(module: str) -> tuple[tuple[str, int], ...]:
  """(imported itjax module, line) of every import in the module's file, wherever it stands. `from P import N` is an
  import of module P.N where that is a module, else of P (N is a name P defines)."""
  with open(modules()[module]) as f:
    tree = ast.parse(f.read(), modules()[module])
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(alias.name, node.lineno) for alias in node.names if _ours(alias.name)]
    elif isinstance(node, ast.ImportFrom) and _ours(base := _absolute(module, node)):
      for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append((sub if sub in modules() else base, node.lineno))
  return tuple(sorted(set(out), key=lambda x: (x[1], x[0])))


def layer(module: str) -> int | None:
  """The index in LAYERS of the module's package (the longest entry that is the module or contains it)."""
  best, index = "", None
  for i, units in enumerate(LAYERS):
    for unit in units:
      inside = module == unit or (unit != "itjax" and module.startswith(unit + "."))
      if inside and len(unit) > len(best):
        best, index = unit, i
  return index


def _where(module: str, line: int) -> str:
  return f"{os.path.relpath(modules()[module], os.path.dirname(ROOT))}:{line}"


def test_the_top_level_holds_the_packages_and_a_few_entry_modules():
  units = {unit.split(".")[1] for units in LAYERS for unit in units if unit != "itjax"}
  stray = []
  for name in sorted(os.listdir(ROOT)):
    path = os.path.join(ROOT, name)
    if name == "__pycache__" or name.startswith("."):
      continue
    package = os.path.isdir(path) and not os.path.islink(path) and os.path.exists(os.path.join(path, "__init__.py"))
    if name not in ENTRIES and not (package and name in units):
      stray.append(name)
  assert not stray, (f"itjax/ holds {', '.join(stray)} beside its packages and entry modules "
                     f"({', '.join(sorted(ENTRIES))}): put a module into the package of its job, or a new package "
                     "into LAYERS in tests/test_layout.py")
  missing = [unit for units in LAYERS for unit in units if unit not in modules()]
  assert not missing, f"LAYERS names {', '.join(missing)}, which itjax/ does not hold"


def test_every_module_has_a_layer_and_every_import_names_a_module():
  unplaced = [m for m in modules() if layer(m) is None]
  assert not unplaced, f"not in LAYERS (tests/test_layout.py): {', '.join(unplaced)}"
  unknown = [f"{_where(m, line)}: {target}" for m in modules() for target, line in imports(m)
             if target not in modules()]
  assert not unknown, "imports of itjax modules that do not exist:\n" + "\n".join(unknown)


def _params():
  for module in modules():
    if KNOWN and module == KNOWN[0]:
      yield pytest.param(module, marks=pytest.mark.xfail(strict=True, reason=f"issue 24: {KNOWN[0]} imports "
                                                         f"{KNOWN[1]}; set KNOWN = None once it no longer does"))
    else:
      yield module


@pytest.mark.parametrize("module", list(_params()))
def test_no_module_imports_a_higher_layer(module):
  mine = layer(module)
  above = [f"{_where(module, line)}: imports {target} (layer {layer(target)}: {', '.join(LAYERS[layer(target)])})"
           for target, line in imports(module) if target in modules() and layer(target) > mine]
  assert not above, (f"{module} is in layer {mine} ({', '.join(LAYERS[mine])}) and imports from a higher one:\n"
                     + "\n".join(above))


def _cycles(leave_out: tuple[str, str] | None = None) -> list[list[str]]:
  """One circle through each strongly connected group of modules (Tarjan), as [a, b, ..., a]; `leave_out`: an
  import (module, imported module) not counted."""
  graph = {m: sorted({t for t, _ in imports(m) if t in modules() and t != m and (m, t) != leave_out})
           for m in modules()}
  index, low, stack, on_stack, groups = {}, {}, [], set(), []

  def visit(node: str) -> None:
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in graph[node]:
      if nxt not in index:
        visit(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in on_stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      group = set()
      while True:
        member = stack.pop()
        on_stack.discard(member)
        group.add(member)
        if member == node:
          break
      if len(group) > 1:
        groups.append(group)

  for node in graph:
    if node not in index:
      visit(node)
  cycles = []
  for group in groups:  # the shortest way back to its first member, within the group (breadth first)
    start = min(group)
    paths, seen = [[start]], {start}
    while paths:
      path = paths.pop(0)
      ahead = [n for n in graph[path[-1]] if n in group]
      if start in ahead:
        cycles.append(path + [start])
        break
      for n in ahead:
        if n not in seen:
          seen.add(n)
          paths.append(path + [n])
  return cycles


def test_no_import_circle():
  lines = []
  for cycle in _cycles():
    steps = [f"  {_where(a, min(line for t, line in imports(a) if t == b))}: {a} imports {b}"
             for a, b in zip(cycle, cycle[1:])]
    lines.append(" -> ".join(cycle) + "\n" + "\n".join(steps))
  if lines and KNOWN and not _cycles(leave_out=KNOWN):
    pytest.xfail(f"issue 24: the only circles pass through {KNOWN[0]} importing {KNOWN[1]}:\n" + "\n".join(lines))
  assert not lines, "import circles:\n" + "\n".join(lines)


def test_the_checks_find_a_higher_import_and_a_circle(tmp_path, monkeypatch):
  """The checks themselves, on a made-up package: model imports training (up a layer), and two modules of
  training import each other, one of them inside a function."""
  files = {"__init__.py": "", "model/__init__.py": "", "training/__init__.py": "",
           "model/llama.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n  from itjax.training import a\n",
           "training/a.py": "from . import b\n", "training/b.py": "def f():\n  from itjax.training.a import g\n"}
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  monkeypatch.setitem(globals(), "ROOT", str(tmp_path))
  for cached in (modules, imports):
    cached.cache_clear()
  try:
    assert imports("itjax.model.llama") == (("itjax.training.a", 3),)
    assert imports("itjax.training.a") == (("itjax.training.b", 1),)
    assert layer("itjax.model.llama") < layer("itjax.training.a")
    assert _cycles() == [["itjax.training.a", "itjax.training.b", "itjax.training.a"]]
  finally:
    for cached in (modules, imports):
      cached.cache_clear()


LONGEST_FUNCTION = 80  # lines, decorators and docstring included: a function a reader follows in one screen


def test_no_function_is_longer_than_a_screen():
  long = []
  for module, path in modules().items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if node.end_lineno - first + 1 > LONGEST_FUNCTION:
          long.append(f"{_where(module, node.lineno)} {node.name}: {node.end_lineno - first + 1} lines")
  assert not long, f"functions over {LONGEST_FUNCTION} lines:\n" + "\n".join(long)
