"""The experiment statistics (itjax.sweep.stats): hand-computed cases, then simulated experiments whose truth is
known: an arm 10 points better is found so, two identical arms are not (at the rate the test's level allows)."""

import math

import numpy as np
import pytest

from itjax.evals import items
from itjax.sweep import stats


def _runs(figures, seeds=None):
  return [stats.Run(s, f) for s, f in zip(seeds or range(len(figures)), figures)]


def test_seeds_alone_give_the_t_interval():
  # 10, 20, 30: mean 20, standard error 10 / sqrt(3); t(2) 97.5% = 4.303 -> 20 +- 24.84
  interval = stats.arm(_runs([10.0, 20.0, 30.0]), replicates=40000)
  assert interval.over == "seeds" and interval.value == 20.0
  assert interval.lo == pytest.approx(20 - 4.303 * 10 / math.sqrt(3), abs=1.0)
  assert interval.hi == pytest.approx(20 + 4.303 * 10 / math.sqrt(3), abs=1.0)


def test_paired_difference_p_value_is_the_t_tests():
  # Differences 2, 4, 6 seed by seed: t = 4 / (2 / sqrt 3) = 3.464 with 2 degrees of freedom, whose two-sided
  # p-value has the closed form 1 - t / sqrt(t^2 + 2) = 0.0742.
  arm, control = _runs([52.0, 34.0, 76.0]), _runs([50.0, 30.0, 70.0])
  d = stats.difference(arm, control, replicates=40000)
  t = 4 / (2 / math.sqrt(3))
  assert d.value == pytest.approx(4.0) and d.over == "seeds"
  assert d.p == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=0.01)
  assert d.lo < 0 < d.hi  # p > 0.05: the interval holds 0
  # Unpaired (no seed in common): the two arms' spreads add up, so the same means are less sure.
  apart = stats.difference(arm, _runs([50.0, 30.0, 70.0], seeds=[5, 6, 7]), replicates=40000)
  assert apart.value == pytest.approx(4.0) and apart.p > 0.5


def test_one_seed_gives_the_examples_interval():
  # 32 of 128 examples right: 25% +- 1.96 x sqrt(0.25 x 0.75 / 128) = 25 +- 7.50
  run = stats.Run(0, 25.0, {f"e{i}": (100.0 if i < 32 else 0.0, 1.0) for i in range(128)})
  interval = stats.arm([run])
  assert interval.over == "examples"
  assert interval.lo == pytest.approx(17.5, abs=1.2) and interval.hi == pytest.approx(32.5, abs=1.2)
  assert stats.arm(_runs([3.0])).lo is None  # one seed and no examples: no interval


def test_weighted_examples_resample_as_a_ratio():
  # KL per token: an example's mean KL weighted by its tokens; the figure is their ratio, and a draw of the
  # examples recomputes that ratio (a long example moves it more).
  table = {"a": (1.0, 10.0), "b": (3.0, 30.0)}
  assert items.means([{"item": k, "scores": {"kl": v}, "weights": {"kl": w}} for k, (v, w) in table.items()]) == {
      "kl": pytest.approx(2.5)}
  run = stats.Run(0, 2.5, table)
  interval = stats.arm([run], replicates=2000)
  assert 1.0 <= interval.lo < 2.5 < interval.hi <= 3.0


def test_interaction_is_zero_without_one():
  seeds, examples = np.array([0.0, 5.0, -3.0]), np.linspace(0, 100, 16)
  tables = [examples + s for s in seeds]  # every run = its seed's shift + the example's level
  assert stats._interaction(tables) == pytest.approx(0.0, abs=1e-9)
  noisy = [t + np.random.default_rng(i).normal(0, 10, t.shape) for i, t in enumerate(tables)]
  assert stats._interaction(noisy) == pytest.approx(100.0, rel=0.5)


def _simulated(rng, levels, seeds, run_sd):
  """Runs answering each example right with its level (+ the run's shift), as 0/100 verdicts."""
  out = []
  for s in seeds:
    right = rng.random(len(levels)) < np.clip(levels + rng.normal(0, run_sd), 0, 1)
    out.append(stats.Run(s, 100.0 * right.mean(), {f"e{i}": (100.0 * r, 1.0) for i, r in enumerate(right)}))
  return out


@pytest.mark.parametrize("better", [0, 28])
def test_known_effects_are_found_and_identical_arms_are_not(better):
  # 256 examples (128 seen + 128 held-out types), 3 seeds, run-level noise of 1 point. Most examples are answered
  # alike by every run (the demo's seeds differ less than coin flips would); the better arm answers 28 examples
  # right that the control mostly gets wrong: about 10 points. (With noisier runs three seeds find such an arm
  # less often: the interval is honest about it, and the summary's p-values say so.)
  found, covered, sims = 0, 0, 40
  for k in range(sims):
    rng = np.random.default_rng(k)
    levels = rng.beta(0.1, 0.2, size=256)
    improved = levels.copy()
    flipped = rng.choice(np.flatnonzero(levels < 0.5), size=better, replace=False)
    improved[flipped] = 1.0
    control = _simulated(rng, levels, (0, 1, 2), 0.01)
    arm = _simulated(rng, improved, (0, 1, 2), 0.01)
    d = stats.difference(arm, control, key=str(k), replicates=1000)
    truth = 100 * (improved.mean() - levels.mean())
    found += d.p < 0.05 and d.value > 0 and d.lo > 0
    covered += d.lo <= truth <= d.hi
  if better:
    assert found >= 0.9 * sims, found
  else:
    assert found <= 0.15 * sims, found  # at the 5% level: a few of 40 by chance
  assert covered >= 0.85 * sims, covered


def test_seeds_that_agree_by_chance_leave_the_examples_their_interval():
  # Two seeds whose figures agree exactly, on examples they answer differently: the seeds' part is 0, so the
  # interaction is not taken out of the examples' part; the interval is the examples' bootstrap, not a point.
  right = [np.arange(20) < 6, np.arange(20) >= 14]  # 6 of 20 each, different examples
  runs = [stats.Run(s, 30.0, {f"e{i}": (100.0 * r[i], 1.0) for i in range(20)}) for s, r in enumerate(right)]
  control = [stats.Run(s, 25.0, {f"e{i}": (100.0 * (i % 4 == 0), 1.0) for i in range(20)}) for s in range(2)]
  a, d = stats.arm(runs, key="a"), stats.difference(runs, control, key="d")
  assert a.hi - a.lo > 10 and d.hi - d.lo > 10 and d.p > 0.2


def test_intervals_of_verdicts_stay_within_0_and_100_and_other_values_are_not_cut():
  def runs(values_by_seed):
    return [stats.Run(s, float(np.mean(v)), {f"e{i}": (float(x), 1.0) for i, x in enumerate(v)})
            for s, v in enumerate(values_by_seed)]
  rare = runs([[100.0] + [0.0] * 19, [0.0] * 20])  # 5% and 0%: t(1) x their spread reaches far below 0
  a = stats.arm(rare, key="rare")
  assert a.lo == 0.0 and 0 < a.hi <= 100
  loss = runs([[1.0] + [0.0] * 19, [0.0] * 20])  # the same shape, not verdicts: the interval is not cut
  assert stats.arm(loss, key="rare").lo < 0
  d = stats.difference(runs([[100.0] * 20, [100.0] * 19 + [0.0]]), runs([[0.0] * 20, [0.0] * 20]), key="d")
  assert -100 <= d.lo and d.hi == 100.0
