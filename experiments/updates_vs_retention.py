"""How many updates, for the same tokens: what LoRA-tuning SmolLM2-135M-Instruct on generated tasks gains (seen and
held-out task types) against what it forgets (retention of the base's right answers, degenerate answers).

  itjax sweep experiments/updates_vs_retention.py [--dry_run] [--only b2x140,b4x70]

Each run is the demo's config (self-replay included) with another batch size and step count; every run generates
its task and replay files from the same seeds, so all train on the same data. Training evaluates before the first
step (the base: the summary's last row) and after the last: 100 seen-type and 100 held-out-type tasks, 192
retention probes, greedy. About 10 minutes a run on 2 CPU cores, 2 of them writing the replay file.
"""

CONFIG = "configs/smollm2_135m_lora.py"
# The demo's config as it was when the README's figures of this experiment were measured (self-replay of 300 prompts
# up to 128 tokens, 100 + 100 tasks): pinned here so a re-run measures the same.
COMMON = {"eval.n_probes": 192, "eval.suites": ("tasks", "forgetting"), "max_len": 256, "replay.n": 300,
          "replay.max_new_tokens": 128, "eval.limit": 100, "eval.subset": 6, "eval.n_general": 6}
RUNS = {  # rows x steps: the first three see the same rows
    "b4x70": {"batch_size": 4, "steps": 70},
    "b2x140": {"batch_size": 2, "steps": 140},
    "b1x280": {"batch_size": 1, "steps": 280},
    "b4x140": {"batch_size": 4, "steps": 140},
    "b2x200": {"batch_size": 2, "steps": 200},
}
METRICS = ("tasks/seen", "tasks/heldout", "forgetting/retention", "forgetting/degenerate_rate",
           "forgetting/perplexity", "eval_loss")
PLOT = ("tasks/seen", "tasks/heldout", "forgetting/retention", "forgetting/degenerate_rate")
