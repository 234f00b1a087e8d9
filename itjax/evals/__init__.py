"""Evaluation suites: the same code runs in `itjax eval` (on saved models) and inside training (on live params).

  ifeval   responses to Google's IFEval-format prompts, scored by IFEval's own checkers (`itjax[eval]`)
  tasks    verified accuracy on the generated verifiable tasks, seen vs held-out instruction types
  latency  time to first token, decode speed and answer length: base, tuned merged, tuned unmerged
  forgetting     what the tuned model lost: KL to the base, perplexity on general text, probes it still answers,
                 degenerate answers to general prompts
  rigidity       task accuracy under typos, casing, whitespace, reworded or reordered constraints, a system prompt,
                 no chat template
  hallucination  questions about invented fact sheets, half of them unanswerable: abstention vs fabrication

`suite.py` says what a suite is (`Suite`: it reads its records, then evaluates subjects keyed by role) and how to
add one; `registry.py` knows every suite by name (each suite module registers its own); `subject.py` holds a model
under evaluation and how it answers (greedy, continuous batching); `report.py` writes results.json, report.md,
SUITE.jsonl and plots; `run.py` is the `itjax eval` command and `live.py` runs the suites inside training;
`scoring.py` (teacher-forced likelihoods, KL) and `degenerate.py` (repetition) serve several suites.
"""
