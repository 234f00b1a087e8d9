"""Are tuned models rigid: do they fail or refuse when the prompt has typos or a changed format, and does training
on varied and perturbed prompts make them less so? (the seed essay's over-rigidity)

  itjax sweep experiments/rigidity.py [--dry_run] [--only ARM[,ARM]]
  itjax sweep experiments/rigidity.py:pod --launcher tpu --tpu NAME --zone ZONE --runs_dir gs://B/runs

The demo's recipe (SmolLM2-135M-Instruct, LoRA rank 8, 140 steps on generated tasks with self-replay), three ways to
word its training prompts: every constraint in one phrasing; in all its phrasings (the control); all phrasings with
half the training prompts perturbed (data.augment: typos, casing, whitespace, reordered constraints, with their own
seed). The rigidity suite then asks 96 clean task prompts (48 seen-type, 48 held-out-type) and each of them typed
with 5% typos, recased, respaced, reworded (a perturbation the augmentation never applies), reordered and with a
system turn: accuracy and its drop from clean per perturbation, the worst drop, refusals and empty answers; beside
them task accuracy on 128 + 128 tasks and the base as a relevance judge on 48 general prompts. Three seeds each.
"""

CONFIG = "configs/smollm2_135m_lora.py"
_PERTURBATIONS = ("typos_5", "case", "whitespace", "reworded", "reordered", "system")
COMMON = {"tasks.eval_phrasings": "all", "tasks.phrasings": "all", "eval.suites": ("tasks", "rigidity", "judge"),
          "eval.limit": 128, "eval.subset": 48, "eval.n_general": 48, "eval.perturbations": _PERTURBATIONS}
RUNS = {
    "all_phrasings": {},
    "one_phrasing": {"tasks.phrasings": "one"},
    "augmented": {"data.augment": ("typos_2", "typos_5", "case", "whitespace", "reordered"),
                  "data.augment_rate": 0.5, "data.augment_seed": 1},
}
SEEDS = (0, 1, 2)
CONTROL = "all_phrasings"
METRICS = ("rigidity/clean", *(f"rigidity/drop/{p}" for p in _PERTURBATIONS), "rigidity/worst_drop",
           "rigidity/refusal_rate", "rigidity/empty_rate", "rigidity/non_answer_rate", "tasks/seen",
           "tasks/heldout", "tasks/seen_answered", "judge/win_rate")
PLOT = ("rigidity/clean", "rigidity/drop/typos_5", "rigidity/drop/reworded", "rigidity/worst_drop", "tasks/seen")

# Llama-3.1-8B-Instruct on a 16-chip TPU slice: the same arms on 20,000 generated tasks.
VARIANTS = {"pod": {
    "CONFIG": "configs/llama31_8b_lora.py:tpu",
    "COMMON": {**COMMON, "tasks.n": 20000, "data.train": "{workdir}/tasks/train.jsonl",
               "data.validation": "{workdir}/tasks/validation.jsonl", "steps": 1000, "replay.n": 2000,
               "replay.weight": 0.15, "eval.limit": 500, "eval.subset": 250, "eval.batch_size": 64},
}}
