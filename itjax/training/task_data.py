"""The generated tasks a run trains on (config.tasks), in WORKDIR/tasks: written before the base model loads, then,
with the base, cut to config.tasks.select records and rewritten by the base (config.tasks.distill).

Both later steps act on the records training would use: those of data.drop_types' types stay as they were (the
loader leaves them out and counts them, as without these steps). Each step runs once per workdir, and a resumed run
reads its marker file; what a step replaced is kept:
  train_all.jsonl                              the generated split, before either step
  selected.jsonl, selected.removed.jsonl       the selection, as `itjax curate --select` writes it (IFD of the rest
                                               under --by quality); selection.json counts the noise kinds kept
  distill_input.jsonl, distilled.jsonl         the records rewritten and `itjax distill`'s output (resumed where a
                                               run stopped); distillation.json holds the acceptance rate
  train.jsonl                                  what training reads
"""

from __future__ import annotations

import json
import os
from collections import Counter

import ml_collections

from itjax.errors import UserError
from itjax.io import atomic, distributed
from itjax.io import workdir as workdir_lib
from itjax.io.log import get as get_logger

log = get_logger(__name__)


def write(config: ml_collections.ConfigDict, workdir: str, files: str) -> None:
  """config.tasks.n generated verifiable tasks in WORKDIR/tasks (train, validation, held-out types)."""
  if config.tasks.n > 0 and distributed.primary() and not os.path.exists(os.path.join(files, "tasks", "train.jsonl")):
    from itjax.data.tasks import write_splits
    write_splits(os.path.join(files, "tasks"), config.tasks.n, config.tasks.seed, config.tasks.holdout,
                 phrasings=config.tasks.phrasings, eval_phrasings=config.tasks.eval_phrasings or None,
                 train_format=config.tasks.train_format, noise=config.tasks.noise,
                 noise_kinds=config.tasks.noise_kinds, n_eval=config.tasks.n_eval, n_grounded=config.tasks.grounded,
                 grounded_unanswerable=config.tasks.grounded_unanswerable)
  workdir_lib.share(workdir, "tasks")  # the other processes read them


def refine(config: ml_collections.ConfigDict, workdir: str, files: str, model) -> None:
  """The selection, then the distillation, where the config asks for them (`model`: the base, a LoadedModel)."""
  t = config.tasks
  if t.n == 0 or not (t.select or t.distill):
    return
  if distributed.primary():
    folder = os.path.join(files, "tasks")
    if t.select:
      select(config, folder, model)
    if t.distill:
      distill(config, folder, model)
  workdir_lib.share(workdir, "tasks")


def _read_marker(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _items(config: ml_collections.ConfigDict, path: str) -> list:
  """The records of `path` as curate reads them, those of data.drop_types' types marked removed for that reason."""
  from itjax.curate import curate as curate_lib
  items = curate_lib.read_items(path)
  drop = {s.strip() for s in config.data.drop_types.split(",") if s.strip()}
  for item in items:
    if drop.intersection(item.obj.get("types") or ()):
      item.remove("data.drop_types")
  return items


def _keep_generated(folder: str) -> str:
  """WORKDIR/tasks/train_all.jsonl: a copy of the generated train split, made before anything replaces it."""
  generated = os.path.join(folder, "train_all.jsonl")
  if not os.path.exists(generated):
    with open(os.path.join(folder, "train.jsonl"), encoding="utf-8") as f:
      text = f.read()
    atomic.write_text(generated, lambda out: out.write(text))
  return generated


def _write_lines(path: str, lines: list[str]) -> None:
  atomic.write_text(path, lambda out: out.writelines(line + "\n" for line in lines))


def select(config: ml_collections.ConfigDict, folder: str, model) -> dict:
  """Keeps config.tasks.select of the generated train records that training would use, chosen as `itjax curate
  --select N --by BY` chooses (quality and diversity on the base); train.jsonl gets them and the data.drop_types
  records, in their order."""
  from itjax.curate import curate as curate_lib
  from itjax.curate.select import select as choose
  t = config.tasks
  done = _read_marker(os.path.join(folder, "selection.json"))
  if done is not None:
    return done
  items = _items(config, _keep_generated(folder))
  candidates = [item for item in items if item.reason is None]
  notes: list[str] = []
  try:
    choose(items, t.select, t.select_by, t.seed, model, config.data.chat_template or None, notes)
  except UserError as e:
    raise UserError(f"config.tasks.select: {e}") from None
  curate_lib.write_outputs(curate_lib.Curated(items, items[0].fmt, notes), os.path.join(folder, "selected.jsonl"))
  lines = [item.line for item in items if item.reason in (None, "data.drop_types")]
  _write_lines(os.path.join(folder, "train.jsonl"), lines)
  kinds = lambda chosen: dict(sorted(Counter(i.obj.get("noise", "clean") for i in chosen).items()))  # noqa: E731
  kept = [item for item in items if item.reason is None]
  summary = {"select": t.select, "by": t.select_by, "candidates": len(candidates), "kept": len(kept),
             "drop_types_left_in": len(lines) - len(kept), "candidates_by_noise": kinds(candidates),
             "kept_by_noise": kinds(kept), "notes": notes}
  atomic.write_json(os.path.join(folder, "selection.json"), summary)
  log.info("tasks.select: kept %d of %d train records by %s (by noise: %s of %s)", len(kept), len(candidates),
           t.select_by, summary["kept_by_noise"], summary["candidates_by_noise"])
  return summary


def distill(config: ml_collections.ConfigDict, folder: str, model) -> dict:
  """The base rewrites the response of every train record that training would use (`itjax distill --template
  TEMPLATE --check CHECK`; a rejected rewrite keeps the original); train.jsonl gets the rewrites in place."""
  from itjax.curate import distill as distill_lib
  t = config.tasks
  done = _read_marker(os.path.join(folder, "distillation.json"))
  if done is not None:
    return done
  _keep_generated(folder)
  items = _items(config, os.path.join(folder, "train.jsonl"))
  source = os.path.join(folder, "distill_input.jsonl")
  if not os.path.exists(source):  # kept: a run stopped after train.jsonl was rewritten finds the same input
    _write_lines(source, [item.line for item in items if item.reason is None])
  out = os.path.join(folder, "distilled.jsonl")
  options = distill_lib.Options(template=t.distill, check=t.distill_check, batch_size=config.replay.batch_size,
                                max_new_tokens=t.distill_max_new_tokens,
                                chat_template=config.data.chat_template or None, progress=distributed.primary())
  summary = distill_lib.distill(source, out, model, options)
  rewrites = iter(distill_lib.complete_lines(out))
  _write_lines(os.path.join(folder, "train.jsonl"),
               [next(rewrites) if item.reason is None else item.line for item in items])
  rate = 100.0 * summary["accepted"] / max(1, summary["records"])
  record = {"template": t.distill, "check": t.distill_check, **summary, "acceptance_rate": rate}
  atomic.write_json(os.path.join(folder, "distillation.json"), record)
  log.info("tasks.distill: the base rewrote %d of %d train records (%.1f%% accepted; rejected: %s), the originals "
           "kept for the rest", summary["accepted"], summary["records"], rate,
           ", ".join(f"{k} {v}" for k, v in summary["rejected_by_reason"].items() if v) or "none")
  return record
