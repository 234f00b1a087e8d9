"""Does instruction tuning make a model fabricate less, and does training on grounded questions help? (the seed
essay: tuning reduces hallucination by about 28%, by 45% on factual QA)

  itjax sweep experiments/hallucination.py [--dry_run] [--only ARM[,ARM]]
  itjax sweep experiments/hallucination.py --summary_only --control no_grounded   # the arms against each other
  itjax sweep experiments/hallucination.py:pod --launcher tpu --tpu NAME --zone ZONE --runs_dir gs://B/runs

The demo's recipe (SmolLM2-135M-Instruct, LoRA rank 8, 140 steps on generated tasks with self-replay), three ways,
each compared with the base before training (CONTROL = "(base)", item by item):
  no_grounded        the demo's tasks: grounded questions are held out of training (as today)
  answerable         the same plus 290 grounded questions whose fact sheet holds the answer (tasks.grounded)
  with_unanswerable  the same plus 290 grounded questions, half of them unanswerable from their sheet and answered
                     with an abstention ("The sheet does not say.")
The evaluation splits are the demo's for every arm (the grounded questions are drawn after them). The hallucination
suite asks 128 questions about invented fact sheets, 64 of them unanswerable (its own seed: none is a training
question): answerable accuracy, fabrication (a value or a non-abstaining answer where the sheet is silent),
abstention and false abstention. Beside them task accuracy on 128 + 128 tasks and the base as a relevance judge on
48 general prompts. Three seeds for the two arms the verdict compares with the base (no_grounded: does tuning as
it is fabricate less; with_unanswerable: does teaching abstention), two for answerable.
"""

CONFIG = "configs/smollm2_135m_lora.py"
COMMON = {"eval.suites": ("tasks", "hallucination", "judge"), "eval.limit": 128, "eval.subset": 128,
          "eval.n_general": 48}
RUNS = {
    "no_grounded": {},
    "answerable": {"tasks.grounded": 290, "tasks.grounded_unanswerable": 0.0},
    "with_unanswerable": {"tasks.grounded": 290, "tasks.grounded_unanswerable": 0.5},
}
SEEDS = {"no_grounded": (0, 1, 2), "answerable": (0, 1), "with_unanswerable": (0, 1, 2)}
CONTROL = "(base)"
METRICS = ("hallucination/fabrication_rate", "hallucination/abstention_rate", "hallucination/answerable_accuracy",
           "hallucination/false_abstention_rate", "tasks/seen", "tasks/heldout", "tasks/seen_answered",
           "tasks/hack_rate", "judge/win_rate", "judge/loss_rate")
PLOT = ("hallucination/fabrication_rate", "hallucination/answerable_accuracy", "tasks/seen", "judge/win_rate")
SCATTER = ("hallucination/fabrication_rate", "hallucination/answerable_accuracy")  # abstaining vs. answering

# Llama-3.1-8B-Instruct on a 16-chip TPU slice: the same arms on 20,000 generated tasks and 2,000 grounded questions.
VARIANTS = {"pod": {
    "CONFIG": "configs/llama31_8b_lora.py:tpu",
    "COMMON": {**COMMON, "tasks.n": 20000, "data.train": "{workdir}/tasks/train.jsonl",
               "data.validation": "{workdir}/tasks/validation.jsonl", "data.drop_types": "", "steps": 1000,
               "eval.limit": 500, "eval.subset": 400, "eval.n_general": 104, "eval.batch_size": 64},
    "RUNS": {arm: {**settings, "tasks.grounded": 2000} if settings else settings for arm, settings in RUNS.items()},
}}
