"""itjax: instruction tuning of language models in JAX/Flax.

The public API, objects in and objects out (paths are accepted wherever a model or data is):

  itjax.load(src)                      a model: HF directory, .gguf file or training workdir -> LoadedModel
  itjax.generate(model, prompts)       greedy or sampled answers (continuous batching) -> list of strings
  itjax.config(name, **overrides)      a training config: a bundled config's name, a config file, or the base
  itjax.train(config, workdir, ...)    LoRA or full fine-tuning, resumable, with hooks -> summary dict
  itjax.evaluate(model, suites, ...)   evaluation suites, beside a base model -> results dict
  itjax.export(workdir, out, format)   a trained run as a Hugging Face model or a PEFT adapter -> its path
  itjax.Hook, itjax.Every              what training does at a cadence (see itjax.training.hooks)

`import itjax` is light: JAX loads when a function first needs it.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"
__all__ = ["load", "generate", "config", "train", "evaluate", "export", "Hook", "Every", "LoadedModel"]


def __getattr__(name: str):  # the classes, imported when first asked for (they import JAX)
  if name in ("Hook", "Every"):
    from itjax.training import hooks
    return getattr(hooks, name)
  if name == "LoadedModel":
    from itjax.interop.loading import LoadedModel
    return LoadedModel
  raise AttributeError(f"module 'itjax' has no attribute {name!r}")


def _model(model, dtype: str = "float32"):
  return load(model, dtype) if isinstance(model, (str, os.PathLike)) else model


def load(src: str, dtype: str = "float32"):
  """A model (config, params, tokenizer, source) from a HF directory, a .gguf file or a training workdir (its base
  with the latest checkpoint's adapters merged). `dtype`: float32 or bfloat16 compute."""
  from itjax.interop.loading import load_model
  return load_model(os.fspath(src), dtype=dtype)


def generate(model, prompts: list, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
             top_k: int = 0, batch_size: int = 8, seed: int = 0, stop: tuple[str, ...] = (),
             chat_template: str | None = None) -> list[str]:
  """Answers to `prompts`: each a string (one user turn) or a chat (a list of {'role', 'content'} messages),
  rendered with the model's chat template (or `chat_template`: a built-in name, or 'none' for raw text).
  temperature 0 is greedy; a response is cut at the first of `stop`."""
  from itjax.data.chat import resolve
  from itjax.data.prompts import prompt_ids
  from itjax.model.generate import Generator, Sampling, generate_texts
  model = _model(model)
  tok = model.tokenizer
  if chat_template and chat_template != "none":
    resolve(chat_template, None)  # a bad name stops before anything runs
  ids = [prompt_ids(tok, {"prompt": p} if isinstance(p, str) else {"messages": p}, chat_template, f"prompts[{i}]")
         for i, p in enumerate(prompts)]
  generator = Generator(model.config, model.params, tok.eos_ids, tok.pad_id)
  return generate_texts(generator, tok, ids, max_new_tokens, Sampling(temperature, top_k, top_p), batch_size, seed,
                        list(stop))


def config(name: str | None = None, **overrides):
  """A training config (ml_collections): the base (`name` None), a bundled config by name ('smollm2_135m_lora',
  'tiny_lora'; ':ARG' picks a variant, e.g. 'smollm2_135m_lora:smoke') or a config file's path. Overrides are
  keys; a nested key is written with '__' (or passed as a dict): `config(name, steps=10, lora__rank=4)`."""
  from itjax.training.config import base_config, from_file
  if name is None:
    c = base_config()
  else:
    path, _, arg = name.partition(":")
    bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", f"{path}.py")
    c = from_file(path if os.path.isfile(path) else bundled, arg)
  from itjax.errors import UserError
  for key, value in overrides.items():
    *parents, leaf = key.replace("__", ".").split(".")
    node = c
    for p in parents + [leaf]:
      if not hasattr(node, "keys") or p not in node:
        raise UserError(f"config: unknown key {key.replace('__', '.')!r}")
      node, parent = node[p], node
    parent[leaf] = tuple(value) if isinstance(value, list) else value
  return c


def train(config, workdir: str, hooks=(), model=None, data: list[dict] | None = None, stop=None) -> dict:
  """Trains `config` into `workdir`, resuming what is there; returns the summary (params, losses, steps).
  `model`: a loaded model (or a path) instead of config.model; `data`: training records (dicts: alpaca,
  messages, prompt/completion or text) instead of config.data.train, kept in WORKDIR/data; `hooks`: Hooks after
  the default ones; `stop`: a threading.Event that ends the run after the current step, with a checkpoint."""
  from itjax.training.loop import train as train_loop
  return train_loop(config, os.fspath(workdir), hooks=hooks, model=None if model is None else _model(model),
                    data=data, stop=stop)


def evaluate(model, suites=("tasks",), base=None, out: str | None = None, **options) -> dict:
  """Runs evaluation suites on `model` (a loaded model or a path) and on `base` beside it (None: a workdir's own
  base, 'none': no reference); writes results.json, report.md and per-example rows to `out` (default: a temporary
  directory; an existing non-empty one needs overwrite=True) and returns the results. `options`: data, responses,
  step, limit, max_new_tokens, batch_size, seed, text, text_bytes, probes, perturbations, overwrite (as for
  `itjax eval`)."""
  from itjax.evals.run import evaluate as evaluate_models
  return evaluate_models(model, list(suites), out, base, **options)


def export(workdir: str, out: str, format: str = "hf", step: int | None = None, dtype: str = "float32",
           overwrite: bool = False) -> str:
  """A training workdir's checkpoint (the latest, or `step`) as a Hugging Face model directory (format 'hf',
  LoRA merged) or a PEFT adapter ('peft'); an existing `out` needs overwrite=True."""
  from itjax.errors import UserError
  from itjax.interop import export as export_lib
  if format == "hf":
    return export_lib.export_hf(os.fspath(workdir), os.fspath(out), step, dtype, overwrite)
  if format == "peft":
    return export_lib.export_peft(os.fspath(workdir), os.fspath(out), step, overwrite)
  raise UserError(f"export format must be 'hf' or 'peft', got {format!r}")
