"""`itjax inspect-data`: what a model would be trained on, record by record, before any training starts.

Every file is read in skip mode, so all bad records are reported (each with its path:line), not just the first.
"""

from __future__ import annotations

from itjax.data import dataset, formats
from itjax.data.pipeline import Pipeline

OPEN, CLOSE = "\u27e6", "\u27e7"  # trained tokens are shown between these brackets
MAX_PROBLEMS_SHOWN = 20


def mark_trained(tokenizer, ids, mask) -> str:
  """The example's text with every run of trained tokens between OPEN and CLOSE (special tokens shown)."""
  out, start = [], 0
  for t in range(1, len(ids) + 1):
    if t == len(ids) or mask[t] != mask[start]:
      text = tokenizer.decode(ids[start:t], skip_special_tokens=False)
      out.append(f"{OPEN}{text}{CLOSE}" if mask[start] else text)
      start = t
  return "".join(out)


def inspect(spec: str, tokenizer, options: dataset.Options) -> tuple[formats.Report, list]:
  """(report with packing efficiency, the sources' examples) for a data spec."""
  options = dataset.Options(**{**options.__dict__, "on_error": "skip"})
  sources, report = dataset.load_sources(spec, tokenizer, options)
  sources = [s for s in sources if s.examples]
  if sources:
    pipe = Pipeline(sources, options.max_len, batch_size=1, pad_id=tokenizer.pad_id, process_index=0,
                    process_count=1)
    report.packing_efficiency = round(pipe.efficiency(0), 4)
  return report, [ex for s in sources for ex in s.examples]


def human_summary(spec: str, report: formats.Report, max_len: int) -> str:
  lines = [f"data: {spec}",
           f"records {report.records}   used {report.used}   skipped {report.skipped}   "
           f"truncated {report.truncated} (max_len {max_len})"]
  if report.tokens:
    lines.append(f"tokens {report.tokens}   target tokens {report.target_tokens} "
                 f"({100 * report.target_tokens / report.tokens:.1f}%)")
  if report.packing_efficiency is not None:
    lines.append(f"packing efficiency {100 * report.packing_efficiency:.1f}% of {max_len}-slot rows are tokens")
  if report.skipped:
    lines.append("skipped by reason:")
    lines += [f"  {n:6d}  {reason}" for reason, n in report.skipped_by_reason.most_common()]
    shown = report.problems[:MAX_PROBLEMS_SHOWN]
    lines.append(f"problems ({len(shown)} of {len(report.problems)} shown; --json lists all):")
    lines += [f"  {p}" for p in shown]
  return "\n".join(lines)
