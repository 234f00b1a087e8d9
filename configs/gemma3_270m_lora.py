"""LoRA-instruction-tune Gemma 3 270M, the pretrained base model, on generated verifiable tasks in Gemma's chat format.

  itjax train --config configs/gemma3_270m_lora.py --workdir runs/gemma3_lora
  itjax demo --config configs/gemma3_270m_lora.py --workdir runs/gemma3_demo
  itjax train --config configs/gemma3_270m_lora.py:smoke --workdir /tmp/gemma3_smoke   # a few steps

The demo's recipe (configs/smollm2_135m_lora.py, read here) on a model that follows no instructions before it: the
built-in `gemma` template (the file has none), <end_of_turn> trained and used as the stop id, no self-replay (a base
model's answers to general prompts are not the behaviour to keep), every task type trained.
"""

import os

from itjax.training.config import from_file


def get_config(arg: str = ""):
  if arg not in ("", "smoke"):
    raise ValueError(f"unknown variant {arg!r} of {__name__}; expected '' or 'smoke'")
  c = from_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm2_135m_lora.py"), arg)
  c.model = "gemma3-270m"
  c.data.chat_template = "gemma"
  c.data.drop_types = ""  # which types a 270M base model does not learn is not measured yet
  c.replay.n = 0
  c.max_len = 256  # Gemma's tokens: the smoke variant's 128 cut some tasks' prompts
  c.eval.n_general = 48
  return c
