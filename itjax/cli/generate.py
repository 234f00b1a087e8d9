"""`itjax generate`: a model's responses to one prompt or to a JSONL file of prompts."""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags

from itjax.cli import common
from itjax.cli.common import NO_TEMPLATE, Alias, Command
from itjax.errors import UserError
from itjax.io import atomic, outputs


def define(fv: flags.FlagValues) -> None:
  common.model(fv)
  flags.DEFINE_string("prompt", None, "One prompt, rendered as a user turn (the model input as it stands with "
                      "--chat_template none).", flag_values=fv)
  flags.DEFINE_string("prompts", None, "JSONL: each line has 'prompt' (a string) or 'messages' (a chat list).",
                      flag_values=fv)
  common.out(fv, "JSONL written with each --prompts line's fields plus 'response'.")
  common.overwrite(fv)
  common.max_new_tokens(fv, 128)
  flags.DEFINE_float("temperature", 0.0, "0 is greedy.", lower_bound=0.0, flag_values=fv)
  flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1 = off).", flag_values=fv)
  flags.DEFINE_integer("top_k", 0, "Keep only the k most likely tokens (0 = off).", lower_bound=0, flag_values=fv)
  common.batch_size(fv, 8)
  common.seed(fv)
  flags.DEFINE_multi_string("stop", [], "Stop strings: a response is cut at the first one (repeatable).",
                            flag_values=fv)
  common.chat_template(fv, " 'none': no template, the prompt text is the model input.")
  common.dtype(fv)
  flags.DEFINE_bool("echo", False, "Also print each prompt and response.", flag_values=fv)


def cmd_generate(f: flags.FlagValues, args: list[str]) -> None:
  from itjax.data.prompts import prompt_ids, read_prompts, record_messages
  from itjax.interop.loading import load_model
  from itjax.model.generate import Generator, Sampling, generate_texts

  if not f.model:
    raise UserError("--model is required (a Hugging Face model directory, a .gguf file or a training workdir)")
  if (f.prompt is None) == (f.prompts is None):
    raise UserError("give exactly one of --prompt TEXT or --prompts IN.jsonl")
  if f.prompts and not f.out:
    raise UserError("--prompts needs --out OUT.jsonl")
  if f.prompts:
    outputs.check(f.out, "--out", reads=[("--prompts", f.prompts), ("--model", f.model)], overwrite=f.overwrite)
  sampling = Sampling(f.temperature, f.top_k, f.top_p)
  records = [{"prompt": f.prompt}] if f.prompt is not None else read_prompts(f.prompts)
  source = f.prompts or "--prompt"

  t = time.time()
  loaded = load_model(f.model, dtype=f.dtype)
  tok = loaded.tokenizer
  print(f"loaded {f.model} ({loaded.config.num_params / 1e6:.1f}M params) in {time.time() - t:.1f}s",
        file=sys.stderr)
  ids = [prompt_ids(tok, r, f.chat_template, f"{source}:{i + 1}") for i, r in enumerate(records)]
  generator = Generator(loaded.config, loaded.params, tok.eos_ids, tok.pad_id)
  responses = generate_texts(generator, tok, ids, f.max_new_tokens, sampling, f.batch_size, f.seed, f.stop)
  if f.prompt is not None:
    print(responses[0])
    return
  os.makedirs(os.path.dirname(os.path.abspath(f.out)), exist_ok=True)
  atomic.write_text(f.out, lambda file: file.writelines(
      json.dumps({**record, "response": response}, ensure_ascii=False) + "\n"
      for record, response in zip(records, responses)))
  if f.echo:
    for record, response in zip(records, responses):
      print(f"\n>>> {record_messages(record)[-1]['content']}\n{response}")
  print(f"\nwrote {len(records)} responses to {f.out}", file=sys.stderr)


COMMANDS = (
    Command("generate", "a model's responses to one prompt, or to a JSONL file of prompts",
            "--model SRC (--prompt TEXT | --prompts IN.jsonl --out OUT.jsonl) [--max_new_tokens N]\n"
            "[--temperature T] [--top_p P] [--top_k K] [--batch_size B] [--seed S] [--stop STR ...]\n"
            "[--chat_template NAME|none] [--dtype float32|bfloat16] [--echo] [--overwrite]",
            define, cmd_generate,
            aliases=(Alias("prompts_file", "prompts"), Alias("output", "out"),
                     Alias("raw", "chat_template", value=NO_TEMPLATE)),
            no_template=True),
)
