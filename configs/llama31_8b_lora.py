"""LoRA on Llama-3.1-8B-Instruct (a local HF directory): one 80 GB GPU, or a TPU slice with FSDP over its chips.

  itjax train --config configs/llama31_8b_lora.py:gpu --config.model=/path/to/Llama-3.1-8B-Instruct \
      --config.data.train=train.jsonl --config.data.validation=val.jsonl --workdir runs/llama8b
  itjax train --config configs/llama31_8b_lora.py:tpu ...   (every host of a v5e-16 / v4-16 slice runs it)

`python -c "from itjax.training.plan import ..."` or tests/test_plans.py checks shapes, shardings and memory per device.
"""

from itjax.training.config import base_config


def get_config(arg: str = "gpu"):
  c = base_config()
  c.model = "Llama-3.1-8B-Instruct"  # a local HF directory
  c.data.train = "train.jsonl"
  c.data.validation = "validation.jsonl"
  c.steps = 1000
  c.max_len = 2048
  c.learning_rate = 2e-4
  c.warmup_steps = 50
  c.lora.rank = 16
  c.lora.alpha = 32.0
  c.compute_dtype = "bfloat16"
  c.base_dtype = "bfloat16"
  c.log_every = 10
  c.eval_every = 200
  c.checkpoint_every = 200
  if arg == "gpu":  # one 80 GB GPU: 16 GB of bf16 base, 4 microbatches of 4 rows
    c.mesh = (1, 1, 1)
    c.batch_size = 16
    c.microbatches = 4
    c.remat = "dots"
  elif arg == "tpu":  # a 16-chip slice (v5e: 16 GB per chip): params sharded over all chips
    c.mesh = (1, -1, 1)
    c.batch_size = 64
    c.microbatches = 2
    c.remat = "full"
    c.peak_flops = 197e12
  else:
    raise ValueError(f"unknown variant {arg!r} of {__name__}; expected 'gpu' or 'tpu'")
  return c
