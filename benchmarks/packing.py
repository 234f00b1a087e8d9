"""Packing efficiency: itjax's whole-epoch best-fit decreasing vs Grain's streaming packers, on the same lengths.

  python benchmarks/packing.py [--max_len 2048] [--n 20000]

Prints, per length distribution, the fraction of row slots that hold tokens and the rows needed (fewer rows = fewer
steps per epoch). Grain packs a stream greedily within `num_packing_bins` open rows; itjax sees the whole epoch.
Grain is not a dependency of itjax: `pip install grain` to include it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from itjax.data import packing


def distributions(n: int, max_len: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  lognormal = np.clip(rng.lognormal(np.log(max_len / 8), 0.9, n), 16, max_len).astype(int)  # chat-like
  short = np.clip(rng.lognormal(np.log(max_len / 24), 0.5, n), 8, max_len).astype(int)  # short instructions
  uniform = rng.integers(8, max_len + 1, n)
  return {"lognormal (median max_len/8)": lognormal, "short (median max_len/24)": short, "uniform": uniform}


def itjax_rows(lengths: np.ndarray, max_len: int) -> int:
  return len(packing.best_fit_decreasing(lengths, max_len))


def grain_rows(lengths: np.ndarray, max_len: int, bins: int, best_fit: bool) -> int:
  import grain
  import grain.experimental as ge
  ds = grain.MapDataset.source([{"inputs": np.ones(n, np.int32)} for n in lengths]).to_iter_dataset()
  cls = ge.BestFitPackIterDataset if best_fit else ge.FirstFitPackIterDataset
  packed = cls(ds, length_struct={"inputs": max_len}, num_packing_bins=bins, shuffle_bins=False)
  return sum(1 for _ in packed)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--max_len", type=int, default=2048)
  parser.add_argument("--n", type=int, default=20000)
  parser.add_argument("--bins", type=int, default=64, help="Grain's open rows (typically the batch size or more)")
  args = parser.parse_args()
  try:
    import grain  # noqa: F401
    have_grain = True
  except ImportError:
    have_grain = False
    print("grain not installed: only itjax is measured (pip install grain)")
  for name, lengths in distributions(args.n, args.max_len).items():
    total = int(lengths.sum())
    print(f"\n{name}: {args.n} examples, {total} tokens, max_len {args.max_len}, "
          f"lower bound {-(-total // args.max_len)} rows")
    runs = [("itjax best-fit decreasing (epoch)", lambda: itjax_rows(lengths, args.max_len))]
    if have_grain:
      runs += [(f"grain first-fit ({args.bins} bins)", lambda: grain_rows(lengths, args.max_len, args.bins, False)),
               (f"grain best-fit ({args.bins} bins)", lambda: grain_rows(lengths, args.max_len, args.bins, True))]
    base = None
    for label, run in runs:
      t = time.perf_counter()
      rows = run()
      seconds = time.perf_counter() - t
      base = base or rows
      print(f"  {label:38s} rows {rows:6d}  efficiency {100 * total / (rows * args.max_len):5.1f}%  "
            f"rows vs itjax {rows / base:5.3f}  {seconds:6.2f}s")


if __name__ == "__main__":
  main()
