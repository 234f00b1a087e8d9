"""Evaluation suites: the same code runs in `itjax eval` (on saved models) and inside training (on live params).

  ifeval   responses to Google's IFEval-format prompts, scored by IFEval's own checkers (`itjax[eval]`)
  tasks    verified accuracy on the generated verifiable tasks, seen vs held-out instruction types
  latency  time to first token, decode speed and answer length: base, tuned merged, tuned unmerged

`subject.py` holds a model under evaluation and how it answers (greedy, continuous batching); each suite module
turns answers into metrics and per-example rows; `report.py` writes results.json, report.md, SUITE.jsonl and plots;
`run.py` is the `itjax eval` command.
"""

SUITES = ("ifeval", "tasks", "latency")
