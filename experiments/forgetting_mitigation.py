"""What keeps a tuned model from forgetting, and what does it cost in task accuracy? (the seed essay: mix general
data; self-distillation, SDFT, reduces forgetting by about 37%, Yang et al. 2024)

  itjax sweep experiments/forgetting_mitigation.py [--dry_run] [--only ARM[,ARM]]
  itjax sweep experiments/forgetting_mitigation.py:pod --launcher tpu --tpu NAME --zone ZONE --runs_dir gs://B/runs

The demo's recipe (SmolLM2-135M-Instruct, LoRA rank 8, 140 steps on generated tasks) against forgetting, seven ways:
  plain_sft    the tasks alone: no self-replay, no anchor (the control)
  replay_10    self-replay (the base's own answers to 200 general prompts, the 82 that end within 96 tokens) as 10%
  replay_30    ... 30% and
  replay_50    ... 50% of the examples (replay.weight = share / (1 - share) examples per task example)
  anchor_0.2   the tasks with KL(base || tuned) on every trained token added to the loss at weight 0.2
  anchor_1     ... at weight 1
  distilled    the tasks with each response rewritten by the base shown the original as a reference (`itjax distill
               --template refer --check tasks`: a rewrite its verifier rejects keeps the original; each run's
               WORKDIR/tasks/distillation.json holds the acceptance rate)
Every arm trains on the same 290 task records (tasks.select: drawn from the demo's 1,162; 140 rows of 256 tokens hold
about 240 of them), so that the base rewrites only those. Every arm is scored on the same 128 seen-type and 128
held-out-type tasks (the gain) and on what the base knew (the cost: KL to the base on 48 general prompts, 96 probes lost
and gained, perplexity of held-out prose, non-answers, the base as a relevance judge). The reduction of forgetting that
the seed's 37% is set against is each arm's KL and probes lost relative to plain SFT's. Three seeds for the control and
the arms the verdict compares with it (replay_30, distilled), two for the others.
"""

CONFIG = "configs/smollm2_135m_lora.py"
COMMON = {"replay.n": 0, "tasks.select": 290, "tasks.select_by": "random",
          "eval.suites": ("tasks", "forgetting", "judge"), "eval.limit": 128, "eval.n_general": 48, "eval.n_probes": 96,
          "eval.subset": 4}


def _replay(share: float) -> dict:
  return {"replay.n": 200, "replay.weight": round(share / (1 - share), 4)}


RUNS = {
    "plain_sft": {},
    "replay_10": _replay(0.1),
    "replay_30": _replay(0.3),
    "replay_50": _replay(0.5),
    "anchor_0.2": {"anchor.weight": 0.2, "anchor.on": "targets"},
    "anchor_1": {"anchor.weight": 1.0, "anchor.on": "targets"},
    "distilled": {"tasks.distill": "refer", "tasks.distill_check": "tasks"},
}
SEEDS = {arm: (0, 1, 2) if arm in ("plain_sft", "replay_30", "distilled") else (0, 1) for arm in RUNS}
CONTROL = "plain_sft"
METRICS = ("tasks/seen", "tasks/heldout", "tasks/seen_answered", "tasks/hack_rate", "forgetting/kl_general",
           "forgetting/retention", "forgetting/lost_probes", "forgetting/gained", "forgetting/perplexity",
           "forgetting/non_answer_rate", "judge/win_rate", "judge/loss_rate")
PLOT = ("tasks/seen", "forgetting/kl_general", "forgetting/retention", "forgetting/non_answer_rate")
SCATTER = (("forgetting/kl_general", "tasks/seen"), ("forgetting/retention", "tasks/heldout"))  # gain vs. cost

# Llama-3.1-8B-Instruct on a 16-chip TPU slice: the same arms on 20,000 generated tasks, self-replay on 400 of the
# 443 built-in general prompts with answers of up to 256 tokens.
VARIANTS = {"pod": {
    "CONFIG": "configs/llama31_8b_lora.py:tpu",
    "COMMON": {**COMMON, "tasks.n": 20000, "tasks.select": 10000, "data.train": "{workdir}/tasks/train.jsonl",
               "data.validation": "{workdir}/tasks/validation.jsonl", "data.drop_types": "", "steps": 1000,
               "eval.limit": 500, "eval.n_general": 104, "eval.batch_size": 64},
    "RUNS": {arm: {**settings, "replay.n": 400, "replay.max_new_tokens": 256} if "replay.n" in settings else settings
             for arm, settings in RUNS.items()},
}}
