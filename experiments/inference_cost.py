"""Do tuned models cost more at inference (the seed essay: 15-25% more time), and is that longer answers or a
dearer token?

  itjax sweep experiments/inference_cost.py [--dry_run]     # on a quiet machine: it measures time
  itjax sweep experiments/inference_cost.py:pod --launcher tpu --tpu NAME --zone ZONE --runs_dir gs://B/runs

The main arms of experiments/instruction_vs_multitask.py and experiments/lora_vs_full.py trained again (one seed,
no evaluation during training), then `itjax eval --suites latency` on each: the same 64 task prompts answered
greedily (up to 96 new tokens) by the base, the tuned model merged (adapters folded into the kernels, as exported)
and unmerged (adapters applied at run time, LoRA only), every program run once untimed and then two timed rounds
taken in turns (itjax/evals/latency.py). Per variant: seconds per prompt with 16 slots, time to first token, decode
tokens/s with 1 and 16 slots, new tokens per prompt; ratio/METRIC divides by the base's, and
ratio/s_per_prompt = ratio/from_length (the answers' lengths at the base's costs) x ratio/from_cost (the rest).
"""

CONFIG = "configs/smollm2_135m_lora.py"
COMMON = {"eval.suites": ()}
RUNS = {
    "lora_r8": {},
    "task_names": {"tasks.phrasings": "all", "tasks.train_format": "task_name"},
    "lora_r32": {"lora.rank": 32, "lora.alpha": 64.0},
    "full_lr5e-5": {"method": "full", "learning_rate": 5e-5},
}
SEEDS = (0,)
CONTROL = "lora_r8"
EVAL = {"suites": "latency", "limit": 64, "max_new_tokens": 96}
METRICS = ("latency/s_per_prompt", "latency/ratio/s_per_prompt", "latency/ratio/from_length",
           "latency/ratio/from_cost", "latency/mean_new_tokens", "latency/ratio/mean_new_tokens", "latency/ttft_s",
           "latency/ratio/ttft_s", "latency/decode_tok_s_b1", "latency/ratio/decode_tok_s_b1",
           "latency/decode_tok_s_b16", "latency/ratio/decode_tok_s_b16", "latency/s_per_prompt_spread",
           "latency/unmerged/ratio/s_per_prompt", "latency/unmerged/ratio/from_cost",
           "latency/unmerged/ratio/decode_tok_s_b16")
PLOT = ("latency/ratio/s_per_prompt", "latency/ratio/from_length", "latency/ratio/from_cost",
        "latency/unmerged/ratio/from_cost")

VARIANTS = {"pod": {
    "CONFIG": "configs/llama31_8b_lora.py:tpu",
    "COMMON": {**COMMON, "tasks.n": 20000, "data.train": "{workdir}/tasks/train.jsonl",
               "data.validation": "{workdir}/tasks/validation.jsonl", "steps": 1000, "replay.n": 2000,
               "replay.weight": 0.15},
    "EVAL": {**EVAL, "limit": 256, "max_new_tokens": 256},
}}
