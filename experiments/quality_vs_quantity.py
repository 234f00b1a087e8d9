"""Do a few curated examples beat many noisy ones? (the seed essay: 1,000-2,000 curated pairs beat larger noisy sets;
LIMA, Zhou et al. 2023)

  itjax sweep experiments/quality_vs_quantity.py [--dry_run] [--only ARM[,ARM]]
  itjax sweep experiments/quality_vs_quantity.py:pod --launcher tpu --tpu NAME --zone ZONE --runs_dir gs://B/runs

The demo's recipe (SmolLM2-135M-Instruct, LoRA rank 8, 140 steps on generated tasks with self-replay) on five
training sets cut from the same 1,000 generated tasks (573 of them of the types this model is trained on):
  large_noisy          all 573, half of them with a response its verifier rejects (tasks.noise: a wrong answer, a
                       broken format or a cut-off answer, in turns); the control
  large_clean          all 573, clean
  small_clean          143 of the clean ones (a quarter), drawn at random
  small_by_quality     143 of the noisy set with the highest instruction-following difficulty below 1 on the base
                       (`itjax curate --by quality`, tasks.select_by)
  small_by_diversity   143 of the noisy set by k-center greedy over the base's embeddings (`--by diversity`)
The same steps for every arm: 140 rows of 256 tokens hold about 240 task examples (88 tokens each), so a small set is
seen 1.7 times and a large one 0.4 times. Each run's WORKDIR/tasks/selection.json counts the noisy records a selection
kept. The evaluation splits (tasks.n_eval = 200) are those the demo's 2,000 tasks come with. Every arm is scored on the
same 128 seen-type and 128 held-out-type tasks, with the answer-quality metrics (answers only, hack rate, non-answers,
the base as a relevance judge) and forgetting (96 probes, KL on 48 general prompts). Three seeds for the control and the
two small arms the verdict compares with it, two for the others.
"""

CONFIG = "configs/smollm2_135m_lora.py"
COMMON = {"tasks.n": 1000, "tasks.n_eval": 200, "eval.suites": ("tasks", "forgetting", "judge"), "eval.limit": 128,
          "eval.n_general": 48, "eval.n_probes": 96, "eval.subset": 4}
_NOISY = {"tasks.noise": 0.5}
_SMALL = 143  # a quarter of the 573 records data.drop_types leaves of 1,000
RUNS = {
    "large_noisy": _NOISY,
    "large_clean": {},
    "small_clean": {"tasks.select": _SMALL, "tasks.select_by": "random"},
    "small_by_quality": {**_NOISY, "tasks.select": _SMALL, "tasks.select_by": "quality"},
    "small_by_diversity": {**_NOISY, "tasks.select": _SMALL, "tasks.select_by": "diversity"},
}
SEEDS = {arm: (0, 1, 2) if arm in ("large_noisy", "small_clean", "small_by_quality") else (0, 1) for arm in RUNS}
CONTROL = "large_noisy"
METRICS = ("tasks/seen", "tasks/heldout", "tasks/seen_answered", "tasks/heldout_answered", "tasks/hack_rate",
           "tasks/non_answer_rate", "forgetting/retention", "forgetting/kl_general", "forgetting/non_answer_rate",
           "judge/win_rate", "judge/loss_rate")
PLOT = ("tasks/seen", "tasks/heldout", "forgetting/retention", "judge/win_rate")
SCATTER = ("forgetting/kl_general", "tasks/seen")  # gain against cost

# Llama-3.1-8B-Instruct on a 16-chip TPU slice: the sizes, 1,000 against 4,000 records of 4,000 generated.
VARIANTS = {"pod": {
    "CONFIG": "configs/llama31_8b_lora.py:tpu",
    "COMMON": {**COMMON, "tasks.n": 4000, "tasks.n_eval": 400, "data.train": "{workdir}/tasks/train.jsonl",
               "data.validation": "{workdir}/tasks/validation.jsonl", "data.drop_types": "", "steps": 1000,
               "replay.n": 2000, "replay.weight": 0.15, "eval.limit": 400, "eval.n_general": 104,
               "eval.batch_size": 64},
    "RUNS": {arm: {**settings, "tasks.select": 1000} if "tasks.select" in settings else settings
             for arm, settings in RUNS.items()},
}}
