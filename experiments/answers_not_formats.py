"""Recipes against format collapse, over three training seeds: does LoRA-tuning SmolLM2-135M-Instruct on generated
tasks keep answering open prompts, and what does each recipe cost in task accuracy?

  itjax sweep experiments/answers_not_formats.py [--dry_run] [--only demo_seed0,replay_seed0]

Every run is the demo's config with one change: `demo` as it is; `replay` with its self-replay mixed in at 0.5
examples per task example instead of 0.15; `lr3e-4` with a third of the learning rate; `anchor` with KL(base ||
tuned) on the self-replay examples' tokens added to the loss at weight 1. Training evaluates before the first step
(the base) and after the last: 64 seen-type and 64 held-out-type tasks (verified; `seen_answered` counts passes
by answers only), 96 retention probes and all 104 general prompts of the forgetting suite (non_answer_rate, and the
prompts that turned into non-answers or back). summary.md adds each recipe's mean and 95% t-interval over its
seeds. About 7 minutes a run on a quiet 2-core CPU.
"""

CONFIG = "configs/smollm2_135m_lora.py"
COMMON = {"eval.suites": ("tasks", "forgetting"), "eval.n_general": 104}
RECIPES = {"demo": {}, "replay": {"replay.weight": 0.5}, "lr3e-4": {"learning_rate": 3e-4},
           "anchor": {"anchor.weight": 1.0, "anchor.on": "replay"}}
# The demo's three seeds first (its figures are the README's), then the other recipes seed by seed.
ORDER = [("demo", s) for s in range(3)] + [(name, s) for s in range(3) for name in RECIPES if name != "demo"]
RUNS = {f"{name}_seed{s}": {**RECIPES[name], "seed": s} for name, s in ORDER}
METRICS = ("tasks/seen", "tasks/seen_answered", "tasks/heldout_answered", "tasks/hack_rate",
           "forgetting/non_answer_rate", "forgetting/newly_non_answer", "forgetting/no_longer_non_answer",
           "forgetting/degenerate_rate", "forgetting/retention", "forgetting/kl_general", "eval_loss")
PLOT = ("tasks/seen_answered", "forgetting/non_answer_rate", "forgetting/retention", "forgetting/kl_general")
