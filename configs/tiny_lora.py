"""A tiny model for tests and quick checks: LoRA on any small HF directory, trained on generated tasks.

  itjax train --config configs/tiny_lora.py --config.model=path/to/tiny_hf_dir --workdir /tmp/tiny
  itjax train --config configs/tiny_lora.py:full --config.model=path/to/tiny_hf_dir --workdir /tmp/tiny_full
"""

from itjax.training.config import base_config


def get_config(arg: str = ""):
  c = base_config()
  c.tasks.n = 64
  c.data.train = "{workdir}/tasks/train.jsonl"
  c.data.validation = "{workdir}/tasks/validation.jsonl"
  c.steps = 6
  c.batch_size = 4
  c.max_len = 512  # the tests' tokenizer has a 400-token vocabulary: the tasks take many tokens
  c.learning_rate = 5e-3
  c.warmup_steps = 2
  c.lora.rank = 4
  c.log_every = 1
  c.eval_every = 3
  c.eval_batches = 2
  c.checkpoint_every = 3
  c.eval.suites = ()  # generation suites off: tests switch them on where they test them
  c.eval.limit = 4
  c.eval.max_new_tokens = 16
  if arg == "full":
    c.method = "full"
    c.learning_rate = 1e-3
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of {__name__}; expected '' or 'full'")
  return c
