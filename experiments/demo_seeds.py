"""The demo's run over four training seeds: how far seen and held-out task accuracy and retention move when only the
seed of the adapters' initialisation and the data order changes (the evaluation sets stay fixed: eval.seed).

  itjax sweep experiments/demo_seeds.py [--dry_run]

Read a single run's figures against this spread before calling a difference between two settings real. Each run
is the demo's config and generates the same task and replay files; about 6 minutes a run on 2 CPU cores.
"""

CONFIG = "configs/smollm2_135m_lora.py"
RUNS = {f"seed{s}": {"seed": s} for s in range(4)}
METRICS = ("tasks/seen", "tasks/heldout", "forgetting/retention", "forgetting/degenerate_rate",
           "forgetting/perplexity", "rigidity/worst_drop", "eval_loss")
PLOT = ("tasks/seen", "tasks/heldout", "forgetting/retention", "forgetting/degenerate_rate")
