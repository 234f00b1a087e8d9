"""LoRA-instruction-tune Gemma 3 270M, the pretrained base model, on generated verifiable tasks in Gemma's chat format.

  itjax train --config configs/gemma3_270m_lora.py --workdir runs/gemma3_lora
  itjax demo --config configs/gemma3_270m_lora.py --workdir runs/gemma3_demo
  itjax train --config configs/gemma3_270m_lora.py:smoke --workdir /tmp/gemma3_smoke   # a few steps

The demo's recipe (configs/smollm2_135m_lora.py) on a model that follows no instructions before it: the built-in
`gemma` template (the file has none), <end_of_turn> trained and used as the stop id, no self-replay (a base model's
answers to general prompts are not the behaviour to keep).
"""

from itjax.training.config import base_config


def get_config(arg: str = ""):
  c = base_config()
  c.model = "gemma3-270m"
  c.data.chat_template = "gemma"
  c.tasks.n = 2000
  c.data.train = "{workdir}/tasks/train.jsonl"
  c.data.validation = "{workdir}/tasks/validation.jsonl"
  c.steps = 140
  c.batch_size = 1
  c.max_len = 256
  c.learning_rate = 1e-3
  c.warmup_steps = 5
  c.lora.rank = 8
  c.lora.alpha = 16.0
  c.log_every = 10
  c.eval_every = 0
  c.eval_batches = 8
  c.checkpoint_every = 70
  c.eval.suites = ("tasks", "forgetting", "judge")
  c.eval.every = 0
  c.eval.limit = 64
  c.eval.batch_size = 32
  c.eval.subset = 4
  c.eval.n_probes = 96
  c.eval.n_general = 48
  if arg == "smoke":
    c.tasks.n = 64
    c.steps = 4
    c.batch_size = 2
    c.log_every = 1
    c.eval_every = 2
    c.eval_batches = 1
    c.checkpoint_every = 2
    c.eval.limit = 4
    c.eval.suites = ("tasks",)
    c.eval.max_new_tokens = 16
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of {__name__}; expected '' or 'smoke'")
  return c
