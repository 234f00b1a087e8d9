"""`itjax distill`: self-distillation data rewriting (SDFT), and self-replay answers to general prompts.

The model that will be tuned rewrites each record's last assistant turn, shown the conversation and that turn as a
reference, through a built-in template (`general`, `refer`, `math`) or a user's Jinja file. A rewrite is rejected,
and the original kept, for the first of: `empty`, `truncated` (max_new_tokens hit before an end of turn),
`mentions_reference` (it speaks of the reference or the rewriting), `failed_check` (--check). OUT holds every input
record in order, in its own format, with a `distill` field {accepted, reason}; OUT.summary.json counts them.
With `--self` the model answers prompts with no reference: accepted answers become `messages` records in OUT and
rejected ones go to OUT.rejected.jsonl. Lines are appended and flushed in input order as answers arrive, so
re-running the same command resumes after the last complete line (a partial last line is dropped and redone).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tqdm import tqdm

from itjax.io import atomic, jsonl
from itjax.curate.curate import Item, response_slots, read_items
from itjax.data.formats import DataError
from itjax.data.tasks import verify
from itjax.errors import OutputExists, UserError

REASONS = ("empty", "truncated", "mentions_reference", "failed_check")
CHECKS = ("none", "tasks", "last_number")
DEFAULT_SELF_PROMPTS = 300  # `--prompts general` without --limit
TEMPLATES = {
    "general": ("{{ instruction }}\n\n"
                "Here is an example of a good answer to the request above:\n\n{{ reference }}\n\n"
                "Use that example as a guide, but answer the request above in your own words. Write only the "
                "answer itself, as if you were replying to the request directly."),
    "refer": ("{{ instruction }}\n\n"
              "The following answer is known to be correct:\n\n{{ reference }}\n\n"
              "Refer to it as you answer the request above yourself. Keep its facts and its format, and write only "
              "your answer, without saying that you were shown one."),
    "math": ("{{ instruction }}\n\n"
             "A correct solution, whose final result you should reach:\n\n{{ reference }}\n\n"
             "Solve the problem above step by step in your own words and arrive at the same final result. End with "
             "the final answer. Do not say that you were shown a solution."),
}
MENTIONS = re.compile(r"\b(reference answer|the reference|your response|original answer|"
                      r"rewrite|rewrites|rewrote|rewritten|rewriting)\b", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")

Answerer = Callable[[int, str, bool], None]  # on_answer(index, text, finished)


@dataclasses.dataclass(frozen=True)
class Options:
  template: str = "general"  # a built-in name or a Jinja file
  check: str = "none"
  batch_size: int = 8
  max_new_tokens: int = 512
  limit: int | None = None
  chat_template: str | None = None
  seed: int = 0
  progress: bool = True


def template_source(name: str) -> str:
  """The text of a built-in template by name, or of a Jinja file; errors name --template."""
  if name in TEMPLATES:
    return TEMPLATES[name]
  if os.path.isfile(name):
    with open(name, encoding="utf-8") as f:
      return f.read()
  raise UserError(f"--template: unknown template {name!r}; expected one of {', '.join(TEMPLATES)} or an "
                  "existing Jinja file")


def load_template(name: str) -> jinja2.Template:
  """A built-in template by name, or a Jinja file rendered in a sandbox; errors name --template."""
  source = template_source(name)
  try:
    return ImmutableSandboxedEnvironment(keep_trailing_newline=False).from_string(source)
  except jinja2.TemplateSyntaxError as e:
    raise UserError(f"--template {name}:{e.lineno}: not a valid Jinja template ({e.message})") from None


def last_number(text: str) -> float | None:
  """The last number in the text (thousands commas allowed), or None when it has none."""
  found = NUMBER.findall(text)
  if not found:
    return None
  try:
    return float(found[-1].rstrip(",").replace(",", ""))
  except ValueError:
    return None


def rejection(text: str, finished: bool, check: str, reference: str = "", verifier: dict | None = None) -> str | None:
  """Why a rewrite is rejected (the first reason that holds, in REASONS order), or None when it is accepted."""
  if not text.strip():
    return "empty"
  if not finished:
    return "truncated"
  if MENTIONS.search(text):
    return "mentions_reference"
  if check == "tasks" and not verify(text, verifier):
    return "failed_check"
  if check == "last_number" and last_number(text) != last_number(reference):
    return "failed_check"
  return None


def rewrite_chat(item: Item, template: jinja2.Template) -> list[dict]:
  """The model's input: the conversation before the last user turn, then the template's text as that turn."""
  messages = item.messages[:-1]
  last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
  content = template.render(instruction=messages[last_user]["content"], reference=item.messages[-1]["content"],
                            messages=messages)
  return messages[:last_user] + [{"role": "user", "content": content}]


def generate_answers(model, chats: list[list[dict]], options: Options, on_answer: Answerer) -> None:
  """Greedy answers from `model` (a LoadedModel) through its chat template, over refilling slots; `on_answer` is
  called as each finishes, in any order. The one place text is generated (tests replace it)."""
  from itjax.model.generate import Generator, Sampling
  tok = model.tokenizer
  ids = [tok.encode_chat(chat, add_generation_prompt=True, template=options.chat_template) for chat in chats]
  generator = Generator(model.config, model.params, tok.eos_ids, tok.pad_id)
  generator.generate(ids, options.max_new_tokens, Sampling(), seed=options.seed, batch_size=options.batch_size,
                     on_done=lambda i, out: on_answer(i, tok.decode(out.tokens), out.finished))


def complete_lines(path: str) -> list[str]:
  """The complete lines of an output being resumed; a partial last line is cut off the file. [] when absent."""
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    data = f.read()
  keep = data.rfind(b"\n") + 1
  if keep < len(data):
    with open(path, "r+b") as f:
      f.truncate(keep)
  return [line for line in data[:keep].decode("utf-8").split("\n") if line.strip()]


def summary_path(out: str) -> str:
  return (out[:-len(".jsonl")] if out.endswith(".jsonl") else out) + ".summary.json"


def rejected_path(out: str) -> str:
  return (out[:-len(".jsonl")] if out.endswith(".jsonl") else out) + ".rejected.jsonl"


def sidecar_path(out: str) -> str:
  return (out[:-len(".jsonl")] if out.endswith(".jsonl") else out) + ".distill.json"


def _file_sha256(path: str) -> str:
  import hashlib
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()


def model_identity(src: str | None):
  """What names a model's weights without loading them: the sha256 of a file's or a HF directory's weights, a
  training workdir's base (its weights' sha256) and newest checkpoint step; None for a model given in Python."""
  if not src or not os.path.exists(src):
    return src or None  # a bucket or a missing path: its name (the load names what is wrong)
  from itjax.interop.loading import is_workdir
  if is_workdir(src):
    from itjax.interop.checkpoint import read_meta
    steps = [int(d) for d in os.listdir(os.path.join(src, "checkpoints")) if d.isdigit()]
    base = read_meta(src)["base"]
    return {"base": base.get("weights_sha256") or base.get("path"), "step": max(steps, default=None)}
  from itjax.interop.checkpoint import weights_sha256
  return weights_sha256(src)


def model_source(model) -> str | None:
  """A model's path: the path given, or a LoadedModel's source."""
  return os.fspath(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "source", None)


def fingerprint(source: str, model, options: Options, replay: bool, dtype: str | None = None) -> dict:
  """What determines OUT's lines: the input file's contents (or the built-in prompts), the model's weights, the
  template's text and the generation settings; `model` a path or a LoadedModel (its source)."""
  src = model_source(model)
  if dtype is None and model is not None and not isinstance(model, (str, os.PathLike)):
    dtype = model.config.dtype
  given = "built-in" if replay and source == "general" else f"sha256 {_file_sha256(source)}"
  return {"--self": replay, "--prompts" if replay else "--data": given, "--model": model_identity(src),
          "--template": None if replay else template_source(options.template), "--check": options.check,
          "--max_new_tokens": options.max_new_tokens, "--limit": options.limit, "--seed": options.seed,
          "--chat_template": options.chat_template, "--dtype": dtype or "float32"}


def _shown(value) -> str:
  text = value if isinstance(value, str) else json.dumps(value)
  text = re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1...", text)  # a sha256, shortened
  return repr(text[:40] + "...") if len(text) > 43 else text


def check_out(out: str, recorded: dict, reads: list[tuple[str, str | None]], overwrite: bool = False) -> bool:
  """Whether OUT is to be continued (False: started anew). OUT and its side files may not be inputs; an OUT there
  is continued only when OUT.distill.json records these inputs and settings, else it stops naming each difference
  (overwrite starts over instead)."""
  from itjax.io import outputs
  files = {"--out": out, "--out's rejected answers": rejected_path(out), "--out's summary": summary_path(out),
           "--out's record of its inputs": sidecar_path(out)}
  there = {flag: outputs.check(path, flag, reads=reads, resumable=True) for flag, path in files.items()}
  if overwrite or not (there["--out"] or there["--out's rejected answers"]):
    return False
  ways = "choose another --out, or pass --overwrite to start over"
  if not there["--out's record of its inputs"]:
    raise OutputExists(f"--out {out} exists without {sidecar_path(out)}, the record of the inputs and settings "
                       f"that made it (an older itjax or another program wrote it): {ways}")
  try:
    with open(sidecar_path(out), encoding="utf-8") as f:
      saved = json.load(f)["fingerprint"]
  except (OSError, ValueError, KeyError, TypeError):
    raise UserError(f"--out {out}: {sidecar_path(out)} does not read as distill's record of its inputs: "
                    f"{ways}") from None
  now = json.loads(json.dumps(recorded))
  changed = [f"{k} {_shown(saved.get(k))} -> {_shown(now.get(k))}" for k in dict.fromkeys([*saved, *now])
             if saved.get(k) != now.get(k)]
  if changed:
    raise OutputExists(f"--out {out} was made from other inputs or settings ({'; '.join(changed)}): {ways}")
  return True


def start(out: str, recorded: dict, reads: list[tuple[str, str | None]], overwrite: bool) -> None:
  """Before the first line: OUT checked (`check_out`); when started anew, the old output removed and
  OUT.distill.json written (whole) with what makes the lines."""
  if check_out(out, recorded, reads, overwrite):
    return
  for path in (out, rejected_path(out), summary_path(out)):
    if os.path.isfile(path):
      os.remove(path)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  atomic.write_json(sidecar_path(out), {"fingerprint": recorded})


def summarize(reasons: list[str | None]) -> dict:
  """{records, accepted, rejected_by_reason} with every reason present."""
  rejected = dict.fromkeys(REASONS, 0)
  for reason in reasons:
    if reason is not None:
      rejected[reason] += 1
  return {"records": len(reasons), "accepted": reasons.count(None), "rejected_by_reason": rejected}


def _line_reason(line: str, where: str) -> str | None:
  try:
    return json.loads(line)["distill"]["reason"]
  except (json.JSONDecodeError, KeyError, TypeError):
    raise UserError(f"{where}: not a line distill wrote (expected a JSON object with 'distill'); is --out another "
                    "file?") from None


def run_in_order(model, chats: list[list[dict]], options: Options, judge: Callable[[int, str, bool], tuple],
                 write: Callable[[int, tuple], None], done_before: int, accepted_before: int) -> None:
  """Generates for every chat; `judge(i, text, finished)` -> (reason, ...) and `write(i, judged)` is called in
  index order through a reorder buffer. The progress bar counts answers as they finish (one long answer early on
  holds back the writes, not the bar) and shows the running acceptance rate."""
  bar = tqdm(total=len(chats), desc="distill", unit="record", disable=not options.progress, dynamic_ncols=True)
  waiting: dict[int, tuple] = {}
  counts = {"next": 0, "seen": done_before, "accepted": accepted_before}

  def on_answer(i: int, text: str, finished: bool) -> None:
    waiting[i] = judged = judge(i, text, finished)
    counts["seen"] += 1
    counts["accepted"] += judged[0] is None
    bar.update(1)
    bar.set_postfix_str(f"accepted {counts['accepted'] / counts['seen']:.0%}")
    while counts["next"] in waiting:
      write(counts["next"], waiting.pop(counts["next"]))
      counts["next"] += 1

  try:
    if chats:
      generate_answers(model, chats, options, on_answer)
  finally:
    bar.close()
  if counts["next"] != len(chats):
    raise RuntimeError(f"generation answered {counts['next']} of {len(chats)} prompts in order")


def read_rewritable(path: str, options: Options) -> list[Item]:
  """The first --limit chat records of IN; a text record, or one without a verifier under --check tasks, stops."""
  items = read_items(path)[:options.limit]
  for item in items:
    if item.messages is None:
      raise DataError(item.where, "a text record has no assistant turn to rewrite", "distill needs chat records")
    if options.check == "tasks" and not isinstance(item.obj.get("verifier"), dict):
      raise DataError(item.where, "--check tasks needs a 'verifier' object", "records from itjax make-tasks "
                      "carry one; use --check none or last_number for other data")
  return items


def distill(data: str, out: str, model, options: Options = Options(), overwrite: bool = False,
            recorded: dict | None = None) -> dict:
  """Rewrites the last assistant turn of every record of `data` into `out` (resuming a partial `out` made from the
  same inputs and settings, or starting over with overwrite); returns the summary, also written to
  OUT.summary.json. `recorded`: the fingerprint, when the caller has it (else computed from `model`'s source)."""
  if options.check not in CHECKS:
    raise UserError(f"--check: expected one of {', '.join(CHECKS)}, got {options.check!r}")
  template = load_template(options.template)
  items = read_rewritable(data, options)
  reads = [("--data", data), ("--model", model_source(model)),
           ("--template", options.template if os.path.isfile(options.template) else None)]
  start(out, recorded or fingerprint(data, model, options, False), reads, overwrite)
  done = complete_lines(out)
  if len(done) > len(items):
    raise UserError(f"{out}: has {len(done)} lines but {data} gives {len(items)} records; is --out another run's?")
  reasons = [_line_reason(line, f"{out}:{n + 1}") for n, line in enumerate(done)]
  todo = items[len(done):]

  def judge(i: int, text: str, finished: bool) -> tuple:
    item = todo[i]
    text = text.strip()
    return rejection(text, finished, options.check, item.messages[-1]["content"], item.obj.get("verifier")), text

  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "a", encoding="utf-8") as f:
    def write(i: int, judged: tuple) -> None:
      reason, text = judged
      obj = json.loads(todo[i].line)
      if reason is None:
        container, key = response_slots(obj, todo[i].fmt)[-1]
        container[key] = text
      obj["distill"] = {"accepted": reason is None, "reason": reason}
      f.write(json.dumps(obj, ensure_ascii=False) + "\n")
      f.flush()
      reasons.append(reason)

    chats = [rewrite_chat(item, template) for item in todo]
    run_in_order(model, chats, options, judge, write, len(done), reasons.count(None))
  summary = summarize(reasons)
  atomic.write_json(summary_path(out), summary)
  return summary


def read_self_prompts(source: str, options: Options) -> list[tuple[str, str]]:
  """(where, prompt) pairs: `general` draws from the built-in generator, anything else is a JSONL file."""
  if source == "general":
    from itjax.data.general_prompts import general_prompts
    count = options.limit or DEFAULT_SELF_PROMPTS
    return [(f"general:{n + 1}", p) for n, p in enumerate(general_prompts(count, options.seed))]
  prompts = []
  for where, obj in jsonl.objects(source, "--prompts file"):
    if not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
      raise UserError(f"{where}: expected a non-empty 'prompt' string, got keys {sorted(obj)}")
    prompts.append((where, obj["prompt"]))
  if not prompts:
    raise UserError(f"{source}: no prompts found")
  return prompts[:options.limit]


def self_replay(prompts: str, out: str, model, options: Options = Options(), overwrite: bool = False,
                recorded: dict | None = None) -> dict:
  """The base model answers every prompt; accepted answers go to `out` as user+assistant `messages` records, the
  rest to OUT.rejected.jsonl (one line per prompt across both, so a re-run with the same inputs and settings
  resumes, and overwrite starts over); returns the summary. `recorded` as for `distill`."""
  pairs = read_self_prompts(prompts, options)
  reads = [("--prompts", None if prompts == "general" else prompts), ("--model", model_source(model))]
  start(out, recorded or fingerprint(prompts, model, options, True), reads, overwrite)
  kept, dropped = complete_lines(out), complete_lines(rejected_path(out))
  if len(kept) + len(dropped) > len(pairs):
    raise UserError(f"{out} and {rejected_path(out)}: hold {len(kept) + len(dropped)} answers for "
                    f"{len(pairs)} prompts; is --out another run's?")
  reasons = [None] * len(kept) + [json.loads(line).get("reason") for line in dropped]
  todo = pairs[len(kept) + len(dropped):]

  def judge(i: int, text: str, finished: bool) -> tuple:
    text = text.strip()
    return rejection(text, finished, "none"), text

  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "a", encoding="utf-8") as good, open(rejected_path(out), "a", encoding="utf-8") as bad:
    def write(i: int, judged: tuple) -> None:
      reason, text = judged
      where, prompt = todo[i]
      if reason is None:
        line = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
                "source": where, "distill": {"accepted": True, "reason": None}}
      else:
        line = {"source": where, "reason": reason, "prompt": prompt, "response": text}
      target = good if reason is None else bad
      target.write(json.dumps(line, ensure_ascii=False) + "\n")
      target.flush()
      reasons.append(reason)

    chats = [[{"role": "user", "content": prompt}] for _, prompt in todo]
    run_in_order(model, chats, options, judge, write, len(reasons), reasons.count(None))
  summary = summarize(reasons)
  atomic.write_json(summary_path(out), summary)
  return summary
