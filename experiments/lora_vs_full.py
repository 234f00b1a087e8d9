"""Does LoRA reach close to full fine-tuning's quality with 0.1-1% of the parameters, and does it forget less?
(the seed essay; Hu et al. 2021; Biderman et al. 2024, "LoRA learns less and forgets less")

  itjax sweep experiments/lora_vs_full.py [--dry_run] [--only ARM[,ARM]]
  itjax sweep experiments/lora_vs_full.py:pod --launcher tpu --tpu NAME --zone ZONE --runs_dir gs://B/runs

The demo's recipe (SmolLM2-135M-Instruct, 140 steps on generated tasks with self-replay), six ways to train it:
LoRA of rank 2, 8 (the control: the demo's) and 32 on every linear layer (alpha = 2 x rank, so the update's scale
stays the same); rank 8 on the q and v projections only (the original LoRA paper's choice); every weight at two
learning rates (1e-5 and 5e-5; AdamW, the same schedule). Scored on 128 seen-type and 128 held-out-type tasks (the
gain) and on what the base knew (the cost: KL to the base on 48 general prompts, 96 probes lost and gained,
perplexity of held-out prose, non-answers, the base as a relevance judge); each run also logs the share of params
that train and XLA's memory analysis of its compiled step (on CPU: a proxy for an accelerator's allocation). Three
seeds for the control and full fine-tuning at 5e-5 (the verdict's pair), two for the others. The runs' step_s is
their own median, from runs that may share the machine: compare the arms' speed with benchmarks/lora_vs_full.py,
which runs their steps in turns in one process beside peft and torch.
"""

CONFIG = "configs/smollm2_135m_lora.py"
COMMON = {"eval.suites": ("tasks", "forgetting", "judge"), "eval.limit": 128, "eval.n_general": 48,
          "eval.n_probes": 96, "eval.subset": 4}
_QV = (r".*/(q|v)_proj/kernel",)
RUNS = {
    "lora_r8": {},
    "lora_r2": {"lora.rank": 2, "lora.alpha": 4.0},
    "lora_r32": {"lora.rank": 32, "lora.alpha": 64.0},
    "lora_r8_qv": {"lora.targets": _QV},
    "full_lr1e-5": {"method": "full", "learning_rate": 1e-5},
    "full_lr5e-5": {"method": "full", "learning_rate": 5e-5},
}
SEEDS = {arm: (0, 1, 2) if arm in ("lora_r8", "full_lr5e-5") else (0, 1) for arm in RUNS}
CONTROL = "lora_r8"
METRICS = ("tasks/seen", "tasks/heldout", "tasks/seen_answered", "tasks/hack_rate", "forgetting/kl_general",
           "forgetting/retention", "forgetting/gained", "forgetting/lost_probes", "forgetting/perplexity",
           "forgetting/non_answer_rate", "judge/win_rate", "trainable_share", "step_s", "step_memory_gb")
PLOT = ("tasks/seen", "tasks/heldout", "forgetting/kl_general", "forgetting/retention", "trainable_share",
        "step_memory_gb")
SCATTER = (("forgetting/kl_general", "tasks/seen"), ("forgetting/retention", "tasks/heldout"))  # gain vs. cost

# Llama-3.1-8B-Instruct on a 16-chip TPU slice (FSDP over the chips holds full fine-tuning's state too): the same
# arms on 20,000 generated tasks.
VARIANTS = {"pod": {
    "CONFIG": "configs/llama31_8b_lora.py:tpu",
    "COMMON": {**COMMON, "tasks.n": 20000, "data.train": "{workdir}/tasks/train.jsonl",
               "data.validation": "{workdir}/tasks/validation.jsonl", "steps": 1000, "replay.n": 2000,
               "replay.weight": 0.15, "eval.limit": 500, "eval.n_general": 104, "eval.batch_size": 64},
}}
