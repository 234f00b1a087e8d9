"""Self-replay weight against forgetting, over three training seeds: the demo's run (140 steps of 2 rows) with the
base's own answers mixed in at 0.15 (the demo) or 0.3 examples per task example.

  itjax sweep experiments/replay_weight.py [--dry_run]

Every run generates the same task and replay files (copy one run's tasks/ and replay/ into the others' workdirs to
skip that). Evaluation before the first step (the base) and after the last: 100 seen-type and 100 held-out-type
tasks, 96 distinct retention probes, 6 general prompts. About 6 minutes a run on 2 CPU cores with the files copied.
"""

CONFIG = "configs/smollm2_135m_lora.py"
# The demo's config as it was when the README's figures of this experiment were measured (it now trains on 1 row of
# 256 tokens a step, with 200 replay prompts, and answers 64 + 64 tasks): pinned here so a re-run measures the same.
COMMON = {"eval.suites": ("tasks", "forgetting"), "batch_size": 2, "replay.n": 300, "replay.max_new_tokens": 128,
          "eval.limit": 100, "eval.subset": 6, "eval.n_general": 6}
RUNS = {f"w{w}_seed{s}": {"replay.weight": w, "seed": s} for w in (0.15, 0.3) for s in range(3)}
METRICS = ("tasks/seen", "tasks/heldout", "forgetting/retention", "forgetting/degenerate_rate",
           "forgetting/perplexity", "forgetting/kl_general", "eval_loss")
PLOT = ("tasks/seen", "tasks/heldout", "forgetting/retention", "forgetting/kl_general")
