"""Intervals and paired tests for an experiment's arms: the figure of each training seed, and where the evaluation
kept its per-example verdicts (itjax.evals.items), the examples behind it.

Two sources of noise make a figure move: the training seed (the same recipe trained again) and the examples it was
scored on (another draw of as many prompts). With n seeds scored on the same k examples, the figure's variance has
three parts: sigma_seed^2 / n (a run better or worse on every example), sigma_example^2 / k (easy and hard
examples) and sigma_interaction^2 / (n k) (a run that gets one example right by chance, where another seed does
not). The 95% interval of an arm's mean draws two parts apart and adds them, replicate by replicate:

  seeds        Student's t with n-1 degrees of freedom times the standard error of the seeds' figures (as a t-test
               over seeds would): the seed and interaction parts;
  examples     a bootstrap: the examples are resampled with replacement (the same draw for every seed and arm, so
               arms stay paired example by example) and each seed's figure is recomputed from its examples'
               verdicts; its deviations are scaled down to the variance of the example part alone (the bootstrap's
               less the interaction's, sigma_interaction^2 / (n k), estimated from the two-way table of runs x
               examples), since the seeds' part holds the interaction already. No more is taken out than the
               seeds' part holds: two or three seeds can agree by chance (two seeds with the same figure give a
               seeds' part of 0), and the interaction they then leave out stays with the examples.

Other ways were measured on simulated experiments (128 examples, 3 seeds, run-level noise; two identical arms called
different at the 5% level): counting the interaction in both parts, 0.5% (too wide); giving the t tails to the
seed part alone (interaction taken out of the seeds' variance), 10% where run noise dominates; a bootstrap of the
three seeds, far too narrow (three values resampled have ten distinct means and (n-1)/n of their spread, with
normal tails). This one, on 200 simulated experiments each: 0-1.5% (4-6% before the seeds' part bounded what is
taken out; that version gave two seeds that agreed on a per-type figure an interval of one point and p < 0.001).
What three seeds find (an arm about 10 points better, p < 0.05): on 128 examples of middling difficulty (each run's
verdict a coin of that bias), runs differing by 3 points, 24% of the time (30% before); on 256 examples most of
which every run answers alike, runs differing by 1 point, 95% (tests/test_stats.py). With one seed the interval
covers the examples only; without per-example verdicts, the seeds only; the summary says which.

An arm's difference to the control pairs its seeds with the control's of the same seed number and uses the same
example draws for both, so what both arms get right or wrong alike cancels out. Its p-value is the bootstrap's: twice
the smaller share of replicates on either side of 0 (the smallest two-sided level whose percentile interval
excludes 0), at least 1/(B+1).
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np

REPLICATES = 4000

ItemTable = dict[str, tuple[float, float]]  # {item: (value, weight)} of one run and one metric


@dataclasses.dataclass(frozen=True)
class Run:
  seed: int
  figure: float  # the run's figure (the mean of its items' values, where it has items)
  items: ItemTable | None = None


@dataclasses.dataclass(frozen=True)
class Interval:
  value: float
  lo: float | None
  hi: float | None
  over: str  # 'seeds and examples', 'examples', 'seeds' or '' (one seed, no examples: no interval)
  p: float | None = None  # a difference's two-sided p-value


def _rng(*keys) -> np.random.Generator:
  return np.random.default_rng(zlib.crc32("/".join(map(str, keys)).encode()))


def _item_counts(items: list[str], rng: np.random.Generator, replicates: int) -> np.ndarray:
  """[replicates, len(items)]: how often each example is drawn in each bootstrap replicate."""
  n = len(items)
  return rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(float)


def _interaction(tables: list[np.ndarray]) -> float:
  """sigma_interaction^2 of n runs' per-example tables (their values' pull on each figure, `_influence`): the mean
  square of the two-way table's residuals; 0 where it cannot be estimated (one run, fewer than two examples)."""
  if len(tables) < 2 or tables[0].size < 2:
    return 0.0
  z = np.stack(tables)
  resid = z - z.mean(axis=1, keepdims=True) - z.mean(axis=0, keepdims=True) + z.mean()
  n, k = z.shape
  return float(np.sum(resid ** 2) / ((n - 1) * (k - 1)))


def _influence(run: Run, items: list[str]) -> np.ndarray:
  """Per example, its value's pull on the run's figure (w_i (v_i - figure) / mean w, plus the figure): the value
  itself where every weight is 1."""
  v = np.array([run.items[i][0] for i in items])
  w = np.array([run.items[i][1] for i in items])
  return w * (v - run.figure) / max(float(w.mean()), 1e-12) + run.figure


def _seed_part(figures: list[float], rng: np.random.Generator, replicates: int) -> tuple[np.ndarray, float]:
  """The seeds' part of each replicate, t(n-1) x the standard error of the figures, and the variance of the mean it
  stands for (the standard error squared); zeros and 0 for one seed or figures equal up to rounding."""
  n = len(figures)
  sd = float(np.std(figures, ddof=1)) if n > 1 else 0.0
  if sd <= 1e-9 * max(1.0, float(np.max(np.abs(figures)))):  # equal up to rounding: t(1)'s tails would show it
    return np.zeros(replicates), 0.0
  return rng.standard_t(n - 1, size=replicates) * sd / math.sqrt(n), sd * sd / n


def _items_part(groups: list[list[Run]], signs: list[float], keys: list[str], counts: np.ndarray,
                seeds_var: float) -> np.ndarray:
  """The examples' part of each replicate: the sum over groups of sign x (the mean of the group's runs' figures on
  the replicate's draw), less the same on all the examples; where the groups hold two or more runs paired seed by
  seed, scaled to the variance of the example part alone (the interaction's share is the seeds' part's, as far as
  `seeds_var`, the variance the seeds' part stands for, holds it)."""
  total = sum(sign * _replicated(runs, keys, counts).mean(axis=1) for runs, sign in zip(groups, signs))
  deviations = total - sum(sign * float(np.mean([r.figure for r in runs])) for runs, sign in zip(groups, signs))
  n = len(groups[0])
  spread = float(np.mean(deviations ** 2))
  if n > 1 and all(len(g) == n for g in groups) and spread > 0:
    tables = _tables(groups, signs)
    shared = min(_interaction(tables) / (n * tables[0].size) if tables[0].size else 0.0, seeds_var)
    deviations = deviations * math.sqrt(max(0.0, 1.0 - shared / spread))
  return deviations


def _tables(groups: list[list[Run]], signs: list[float]) -> list[np.ndarray]:
  """Per seed (the groups' runs paired by position), the signed sum of their per-example tables over the examples
  every run scored."""
  common = sorted(set.intersection(*(set(r.items) for runs in groups for r in runs)))
  return [sum(sign * _influence(runs[j], common) for runs, sign in zip(groups, signs)) for j in range(len(groups[0]))]


def _replicated(runs: list[Run], items: list[str], counts: np.ndarray | None) -> np.ndarray:
  """[replicates, seeds]: each run's figure recomputed on each replicate's draw of the examples."""
  out = []
  for run in runs:
    v = np.array([run.items.get(i, (0.0, 0.0))[0] for i in items])
    w = np.array([run.items.get(i, (0.0, 0.0))[1] for i in items])
    num, den = counts @ (v * w), counts @ w
    out.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), run.figure))
  return np.stack(out, axis=1)


def _with_items(runs: list[Run]) -> bool:
  return all(r.items for r in runs)


def _binary(runs: list[Run]) -> bool:
  """Whether every example's value is a verdict, 0 or 100 (a figure then lies in [0, 100])."""
  return all(v in (0.0, 100.0) for r in runs for v, _ in (r.items or {}).values())


def _interval(center: float, replicates: np.ndarray, over: str, test: bool, bound: float | None = None) -> Interval:
  """Percentile interval of the replicates (within [0, bound] or, for a difference, [-bound, bound]: Student's t
  with two or three seeds can reach beyond what a share of verdicts can be) and, for a difference, its p-value."""
  lo, hi = np.percentile(replicates, [2.5, 97.5])
  if bound is not None:
    lo, hi = max(lo, -bound if test else 0.0), min(hi, bound)
  p = None
  if test:
    below, above = int(np.sum(replicates <= 0)), int(np.sum(replicates >= 0))
    p = min(1.0, (2 * min(below, above) + 1) / (len(replicates) + 1))
  return Interval(center, float(lo), float(hi), over, p)


def _over(n_seeds: int, items: bool) -> str:
  return {(True, True): "seeds and examples", (False, True): "examples", (True, False): "seeds"}.get(
      (n_seeds > 1, items), "")


def arm(runs: list[Run], key: str = "", replicates: int = REPLICATES) -> Interval:
  """The mean of the runs' figures with its 95% interval (see the module's docstring); `key` seeds the draws."""
  mean = float(np.mean([r.figure for r in runs]))
  items = _with_items(runs)
  over = _over(len(runs), items)
  if not over:
    return Interval(mean, None, None, over)
  rng = _rng("arm", key)
  spread, seeds_var = _seed_part([r.figure for r in runs], rng, replicates)
  if items:
    keys = sorted(set().union(*(r.items for r in runs)))
    spread = spread + _items_part([runs], [1.0], keys, _item_counts(keys, rng, replicates), seeds_var)
  return _interval(mean, mean + spread, over, test=False, bound=100.0 if items and _binary(runs) else None)


def difference(runs: list[Run], control: list[Run], key: str = "", replicates: int = REPLICATES) -> Interval:
  """Mean of `runs` minus mean of `control`, with its 95% interval and p-value: seeds paired by seed number where
  both arms have them (else the two means compared unpaired), examples paired through shared bootstrap draws."""
  rng = _rng("difference", key)
  by_seed = {r.seed: r for r in control}
  pairs = [(r, by_seed[r.seed]) for r in runs if r.seed in by_seed]
  items = _with_items(runs) and _with_items(control)
  if pairs:
    mine, theirs = [a for a, _ in pairs], [b for _, b in pairs]
    diffs = [a.figure - b.figure for a, b in pairs]
    center, over = float(np.mean(diffs)), _over(len(pairs), items)
    if not over:
      return Interval(center, None, None, over)
    spread, seeds_var = _seed_part(diffs, rng, replicates)
  else:
    mine, theirs = runs, control
    center = float(np.mean([r.figure for r in runs]) - np.mean([r.figure for r in control]))
    over = _over(min(len(runs), len(control)), items)
    if not over:
      return Interval(center, None, None, over)
    (mine_part, mine_var), (theirs_part, theirs_var) = (_seed_part([r.figure for r in group], rng, replicates)
                                                        for group in (runs, control))
    spread, seeds_var = mine_part - theirs_part, mine_var + theirs_var
  if items:
    keys = sorted(set().union(*(r.items for r in mine + theirs)))
    spread = spread + _items_part([mine, theirs], [1.0, -1.0], keys, _item_counts(keys, rng, replicates), seeds_var)
  binary = items and _binary(mine + theirs)
  return _interval(center, center + spread, over, test=True, bound=100.0 if binary else None)
