"""Does instruction tuning generalise to unseen instructions where multi-task tuning specialises? (the seed essay;
FLAN's held-out-cluster result, Wei et al. 2022)

  itjax sweep experiments/instruction_vs_multitask.py [--dry_run] [--only ARM[,ARM]]
  itjax sweep experiments/instruction_vs_multitask.py:pod --launcher tpu --tpu NAME --zone ZONE --runs_dir gs://B/runs

The demo's recipe (SmolLM2-135M-Instruct, LoRA rank 8, 140 steps on generated tasks with self-replay), four ways of
presenting the same training tasks:
  instructions   natural-language instructions in every phrasing of each constraint (the control)
  one_phrasing   the same records, each constraint always worded the same way
  task_names     the same records as a multi-task format without instructions: 'task: extract_numbers+numbered+title'
                 then 'input: ...' (tasks.train_format)
  specialist     instructions, but only five operations (reverse_words, dedupe, extract_numbers, acronym,
                 count_letter), for as many steps
Every arm is scored on the same 128 seen-type and 128 held-out-type tasks, written as natural-language instructions
in every phrasing (tasks.eval_phrasings), with the answer-quality metrics beside accuracy (answers only, hack rate,
non-answers on 48 general prompts, the base as a relevance judge) and retention of 96 probes. Three training seeds
for the arms the verdict compares, two for the specialist. About 9 minutes a run on 2 CPU cores (the first run
answers with the base too, which the others read back).

The pod variant (`:pod`, VARIANTS below) is the same design for Llama-3.1-8B-Instruct on a TPU slice.
"""

from itjax.data.tasks import TYPES  # every operation and constraint: accuracy per type

CONFIG = "configs/smollm2_135m_lora.py"
_DROPPED = "arithmetic,date_add,paragraphs,sort_numbers,sort_words"  # the demo config's: not learned at 135M
COMMON = {"tasks.eval_phrasings": "all", "tasks.phrasings": "all",
          "eval.suites": ("tasks", "forgetting", "judge"), "eval.limit": 128, "eval.n_general": 48,
          "eval.n_probes": 96, "eval.subset": 4}
RUNS = {
    "instructions": {},
    "one_phrasing": {"tasks.phrasings": "one"},
    "task_names": {"tasks.train_format": "task_name"},
    "specialist": {"data.drop_types": _DROPPED + ",word_count,unit_convert"},
}
SEEDS = {"instructions": (0, 1, 2), "one_phrasing": (0, 1, 2), "task_names": (0, 1, 2), "specialist": (0, 1)}
CONTROL = "instructions"
METRICS = ("tasks/seen", "tasks/heldout", "tasks/seen_answered", "tasks/heldout_answered", "tasks/hack_rate",
           "tasks/non_answer_rate", "forgetting/non_answer_rate", "judge/win_rate", "judge/loss_rate",
           "forgetting/retention", "forgetting/kl_general", *(f"tasks/type/{t}" for t in TYPES))
PLOT = ("tasks/seen", "tasks/heldout", "forgetting/non_answer_rate", "judge/win_rate")
SCATTER = ("tasks/seen", "tasks/heldout")  # specialising: seen types up, held-out types not

# Llama-3.1-8B-Instruct on a 16-chip TPU slice: the same arms on 20,000 generated tasks, larger evaluation sets.
VARIANTS = {"pod": {
    "CONFIG": "configs/llama31_8b_lora.py:tpu",
    "COMMON": {**COMMON, "tasks.n": 20000, "data.train": "{workdir}/tasks/train.jsonl",
               "data.validation": "{workdir}/tasks/validation.jsonl", "data.drop_types": "", "steps": 1000,
               "replay.n": 2000, "replay.weight": 0.15, "eval.limit": 500, "eval.n_general": 104,
               "eval.batch_size": 64},
    "RUNS": {**RUNS, "specialist": {"data.drop_types": "sort_numbers,sort_words,arithmetic,date_add,word_count,"
                                                      "unit_convert"}},
}}
