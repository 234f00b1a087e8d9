"""The command line end to end: `generate` on a tiny HF model directory, `inspect-data`, `make-tasks`."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from conftest import itjax_in_process, make_llama3_style_tokenizer


@pytest.mark.slow
def test_generate_prompts_file(tiny_hf_dir, tmp_path):
  prompts = tmp_path / "in.jsonl"
  records = [{"prompt": "What is the capital of France?", "id": 1},
             {"messages": [{"role": "system", "content": "Answer briefly."},
                           {"role": "user", "content": "List three colours."}], "id": 2},
             {"prompt": "Hello", "id": 3}]
  prompts.write_text("\n".join(json.dumps(r) for r in records) + "\n")
  out = tmp_path / "out.jsonl"
  result = itjax_in_process("generate", "--model", tiny_hf_dir, "--prompts", str(prompts), "--out",
                            str(out), "--max_new_tokens", "8", "--batch_size", "2", "--temperature", "0.7",
                            "--top_p", "0.9", "--top_k", "20", "--seed", "3")
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [{k: v for k, v in line.items() if k != "response"} for line in lines] == records
  assert all(isinstance(line["response"], str) for line in lines)
  assert "prompt/s" in result.stderr and "tok/s" in result.stderr  # the progress bar


@pytest.mark.parametrize("no_template", [["--chat_template", "none"], ["--raw"]])
def test_generate_single_prompt_without_template(tiny_hf_dir, no_template):
  result = itjax_in_process("generate", "--model", tiny_hf_dir, "--prompt", "The quick brown", *no_template,
                            "--max_new_tokens", "4")
  assert result.returncode == 0, result.stderr
  notice = "itjax generate: --raw is an alias of --chat_template none\n"
  assert (notice in result.stderr) == (no_template == ["--raw"])


def test_generate_reports_bad_line(tiny_hf_dir, tmp_path):
  """The older flag names keep working, each saying once which name it stands for."""
  prompts = tmp_path / "bad.jsonl"
  prompts.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
  result = itjax_in_process("generate", "--model", tiny_hf_dir, "--prompts_file", str(prompts), "--output",
                            str(tmp_path / "o.jsonl"))
  assert result.returncode == 1
  assert result.stderr.splitlines()[:2] == ["itjax generate: --prompts_file is an alias of --prompts",
                                            "itjax generate: --output is an alias of --out"]
  assert "bad.jsonl:2: expected a 'prompt' string or a 'messages' list" in result.stderr


def test_generate_usage_errors(tmp_path):
  result = itjax_in_process("generate", "--model", str(tmp_path / "missing"), "--prompt", "hi")
  assert result.returncode == 1 and "does not exist" in result.stderr
  result = itjax_in_process("generate", "--prompt", "hi")
  assert result.returncode == 1 and "--model is required" in result.stderr
  result = itjax_in_process("frobnicate")
  assert result.returncode == 2 and "usage: itjax" in result.stderr
  result = itjax_in_process("train", "train", "--workdir", str(tmp_path / "w"))  # a stray argument, not dropped
  assert result.returncode == 2 and "unexpected argument 'train' (every input is a --flag)" in result.stderr
  result = itjax_in_process("generate", "--model", str(tmp_path / "missing"), "--prompt", "hi", "--chat_template",
                            "chatm1")
  assert result.returncode == 1 and ("--chat_template: chat template 'chatm1' is neither a built-in name" in
                                     result.stderr and "did you mean 'chatml'?" in result.stderr), result.stderr


def _flag_names(name: str) -> set[str]:
  from itjax import cli
  fv = cli.flag_values(cli.COMMANDS[name])
  return {fv[n].name for n in fv}


def _listed(flag: str, text: str) -> bool:
  return re.search(rf"(?<![\w-])--(\[no\])?{re.escape(flag)}(?![\w])", text) is not None


COMMAND_NAMES = ("generate", "fetch-demo-model", "demo", "inspect-data", "make-tasks", "train", "export", "eval",
                 "curate", "distill", "sweep")


@pytest.mark.parametrize("name", COMMAND_NAMES)
@pytest.mark.parametrize("ask", ["--help", "-h"])
def test_help_lists_the_commands_own_flags_and_no_other(name, ask):
  """`itjax COMMAND --help`: its usage line and every flag of its own; a flag that only other commands have is not
  there (the flag sets are built from the command table, so a flag leaking into another command's set fails)."""
  from itjax import cli
  assert tuple(cli.COMMANDS) == COMMAND_NAMES
  result = itjax_in_process(name, ask)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f"usage: itjax {name}")
  own = _flag_names(name)
  assert {"debug", "verbosity"} <= own
  for flag in own:
    assert _listed(flag, result.stdout), f"itjax {name} --help does not list --{flag}"
  others = set().union(*(_flag_names(n) for n in COMMAND_NAMES if n != name)) - own
  leaked = sorted(flag for flag in others if _listed(flag, result.stdout))
  assert not leaked, f"itjax {name} --help lists flags of other commands: {leaked}"


def test_every_flag_name_means_one_thing():
  """A flag of several commands is one thing: each has its own help, but a flag name never changes type."""
  from itjax import cli
  kinds = {}
  for name in COMMAND_NAMES:
    fv = cli.flag_values(cli.COMMANDS[name])
    for flag in {fv[n].name: fv[n] for n in fv}.values():
      kinds.setdefault(flag.name, set()).add((flag.flag_type(), flag.boolean))
  assert {flag: k for flag, k in kinds.items() if len(k) > 1} == {}
  assert "format" not in _flag_names("inspect-data") - {a.name for a in cli.COMMANDS["inspect-data"].aliases}


def test_top_level_help_lists_the_commands():
  for args in [("--help",), ("-h",)]:
    result = itjax_in_process(*args)
    assert result.returncode == 0 and result.stderr == ""
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMAND_NAMES)
  bare = itjax_in_process()
  assert bare.returncode == 2 and "commands:" in bare.stderr and "  train " in bare.stderr
  assert itjax_in_process("help", "export").stdout.startswith("usage: itjax export --workdir DIR --format hf|peft")
  result = itjax_in_process("trian")
  assert result.returncode == 2 and "unknown command 'trian' (did you mean 'train'?)" in result.stderr


def test_flags_belong_to_their_command(tmp_path):
  """A flag of another command is refused, and says where to look."""
  result = itjax_in_process("make-tasks", "--out", str(tmp_path / "t"), "--model", "x")
  assert result.returncode == 2
  assert "Unknown command line flag 'model'" in result.stderr and "itjax make-tasks --help" in result.stderr
  assert not (tmp_path / "t").exists()


def test_each_call_parses_its_own_flags(monkeypatch):
  """The command line in one process twice: a flag given to the first call is not the second's; per-command
  defaults are the flags' own; no global absl flag is defined or parsed."""
  from absl import flags
  from itjax.evals import run as evals_run
  seen = []
  monkeypatch.setattr(evals_run, "run", lambda model, suites, out, base, step, data, responses, settings, inputs:
                      seen.append((model, suites, out, settings)) or {})
  monkeypatch.setattr("itjax.evals.report.markdown", lambda results: "")
  first = itjax_in_process("eval", "--model", "m", "--suites", "ifeval", "--out", "o", "--max_new_tokens", "7",
                           "--batch_size", "3", "--limit", "2")
  second = itjax_in_process("eval", "--out", "o2")
  assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
  (model, suites, _, settings), (model2, suites2, out2, settings2) = seen
  assert (model, suites, settings.max_new_tokens, settings.batch_size, settings.limit) == ("m", ["ifeval"], 7, 3, 2)
  assert (model2, suites2, out2) == (None, ["tasks"], "o2")
  assert (settings2.max_new_tokens, settings2.batch_size, settings2.limit) == (256, 16, None)
  assert not {"model", "out", "suites", "config", "debug"} & set(flags.FLAGS)


def test_aliases_and_their_conflicts(tmp_path):
  both = itjax_in_process("generate", "--model", "m", "--prompts", "a.jsonl", "--prompts_file", "b.jsonl", "--out",
                          "o.jsonl")
  assert both.returncode == 1 and "give --prompts or its alias --prompts_file, not both" in both.stderr
  raw = itjax_in_process("generate", "--model", "m", "--prompt", "hi", "--raw", "--chat_template", "chatml")
  assert raw.returncode == 1 and "--raw (--chat_template none) contradicts --chat_template chatml" in raw.stderr
  none = itjax_in_process("inspect-data", "--data", "d.jsonl", "--model", "m", "--chat_template", "none")
  assert none.returncode == 1
  assert ("--chat_template none (no template) is for itjax generate, itjax eval; inspect-data needs a chat "
          "template") in none.stderr
  export = itjax_in_process("export", "--workdir", str(tmp_path / "w"), "--format", "onnx", "--out", "x")
  assert export.returncode == 1 and "--format hf|peft" in export.stderr and "alias" not in export.stderr


def _bad_prompts(tmp_path):
  prompts = tmp_path / "p.jsonl"
  prompts.write_text('{"prompt": "fine"}\n{"prompt": "cut\n')
  return ("generate", "--model", str(tmp_path / "no-model"), "--prompts", str(prompts), "--out",
          str(tmp_path / "o.jsonl"))


def test_an_error_is_one_line_without_debug(tmp_path, monkeypatch):
  monkeypatch.delenv("ITJAX_DEBUG", raising=False)
  result = itjax_in_process(*_bad_prompts(tmp_path))
  assert result.returncode == 1
  assert re.fullmatch(r"itjax generate: error: \S+p\.jsonl:2: not valid JSON \([^\n]*\)\n", result.stderr), \
      result.stderr


@pytest.mark.parametrize("how", ["--debug", "ITJAX_DEBUG=1"])
def test_debug_shows_the_traceback_and_the_hidden_cause(tmp_path, monkeypatch, how):
  """The JSON reader says `not valid JSON` and hides json's own error (`raise ... from None`); --debug shows it."""
  monkeypatch.delenv("ITJAX_DEBUG", raising=False)
  args = _bad_prompts(tmp_path)
  if how == "--debug":
    args += ("--debug",)
  else:
    monkeypatch.setenv("ITJAX_DEBUG", "1")
  result = itjax_in_process(*args)
  assert result.returncode == 1
  err = result.stderr
  assert "Traceback (most recent call last)" in err and "json.decoder.JSONDecodeError" in err
  assert "During handling of the above exception, another exception occurred" in err
  assert err.index("JSONDecodeError") < err.index("itjax.errors.UserError")
  last = err.rstrip("\n").splitlines()[-1]
  assert re.fullmatch(r"itjax generate: error: \S+p\.jsonl:2: not valid JSON \(.*\)", last), last


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok")
  make_llama3_style_tokenizer().save_pretrained(path)
  return str(path)


def test_inspect_data_counts_every_record(tokenizer_dir, tmp_path):
  chat = {"messages": [{"role": "user", "content": "What is the capital of France?"},
                       {"role": "assistant", "content": "Paris is the capital of France."}]}
  long = {"instruction": "List three colours. " * 10, "output": "Red, green and blue. " * 30}
  lines = [json.dumps(chat), "{broken", json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
           json.dumps(chat), json.dumps({"messages": [{"role": "bot", "content": "x"}]})]
  data = tmp_path / "chats.jsonl"
  data.write_text("\n".join(lines) + "\n")
  alpaca = tmp_path / "alpaca.jsonl"
  alpaca.write_text(json.dumps(long) + "\n" + json.dumps({"instruction": "Q", "output": ""}) + "\n")
  result = itjax_in_process("inspect-data", "--data", f"{data},{alpaca}", "--model", tokenizer_dir, "--max_len", "128",
                 "--json")
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout)
  assert {k: summary[k] for k in ("records", "used", "skipped", "truncated")} == {
      "records": 7, "used": 3, "skipped": 4, "truncated": 1}
  assert summary["skipped_by_reason"] == {"not valid JSON": 1, "conversation does not end with an assistant turn": 1,
                                          "unknown role": 1, "empty field 'output'": 1}
  assert [p.split(": ")[0] for p in summary["problems"]] == [f"{data}:2", f"{data}:3", f"{data}:5", f"{alpaca}:2"]
  assert summary["tokens"] > summary["target_tokens"] > 0 and 0 < summary["packing_efficiency"] <= 1

  shown = itjax_in_process("inspect-data", "--data", str(data), "--model", tokenizer_dir, "--show", "1")
  assert shown.returncode == 0, shown.stderr
  assert "records 5   used 2   skipped 3" in shown.stdout
  assert "\u27e6Paris is the capital of France.<|eot_id|>\u27e7" in shown.stdout
  assert f"{data}:2: not valid JSON" in shown.stdout


def test_make_tasks_writes_the_splits(tmp_path):
  out = tmp_path / "tasks"
  result = itjax_in_process("make-tasks", "--out", str(out), "--n", "40", "--seed", "1")
  assert result.returncode == 0, result.stderr
  counts = {s: len((out / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "validation", "heldout")}
  assert counts == {"train": 40, "validation": 4, "heldout": 4}
  again = tmp_path / "again"
  assert itjax_in_process("make-tasks", "--out", str(again), "--n", "40", "--seed", "1").returncode == 0
  assert (again / "train.jsonl").read_text() == (out / "train.jsonl").read_text()


@pytest.mark.parametrize("error,code,one_line", [
    (lambda: __import__("itjax.errors").errors.UserError("data.jsonl:3: missing field 'output'"), 1, True),
    (lambda: __import__("itjax.errors").errors.InputNotFound("model path 'x' does not exist"), 1, True),
    (lambda: KeyError("layers"), 70, False),  # an internal lookup that failed: a bug, not the input's fault
    (lambda: ValueError("operands could not be broadcast"), 70, False),
])
def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys, error, code, one_line):
  from itjax import cli

  def boom(f, args):
    raise error()

  monkeypatch.setitem(cli.COMMANDS, "make-tasks", dataclasses.replace(cli.COMMANDS["make-tasks"], run=boom))
  assert cli.main(["make-tasks"]) == code
  err = capsys.readouterr().err
  if one_line:
    assert err == f"itjax make-tasks: error: {error()}\n"
  else:
    assert "Traceback (most recent call last)" in err and "in boom" in err
    assert err.rstrip().endswith("this is a bug in itjax, not a problem with the input; please report it with the "
                                 "traceback above")


def test_an_installed_itjax_has_the_demo_config(tmp_path):
  """`itjax demo` outside a checkout: the wheel carries configs/ as itjax/configs, and the demo reads it from there."""
  import os
  import shutil
  import zipfile
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  src = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
  src.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(root, name), src / name)
  for name in ("itjax", "configs"):
    shutil.copytree(os.path.join(root, name), src / name, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
  built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
  assert built.returncode == 0, built.stderr[-2000:]
  (wheel,) = (tmp_path / "dist").glob("itjax-*.whl")
  site = tmp_path / "site"
  zipfile.ZipFile(wheel).extractall(site)
  with open(os.path.join(root, "configs", "smollm2_135m_lora.py")) as f:
    assert (site / "itjax" / "configs" / "smollm2_135m_lora.py").read_text() == f.read()
  probe = ("import itjax.demo as d; c = d.load_config(); g = d.load_config(d.CONFIGS['gemma3-270m']); "
           "print(d.CONFIG); print(c.tasks.n, c.steps); print(g.model, g.data.chat_template)")
  ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(site)})
  assert ran.returncode == 0, ran.stderr[-2000:]
  path, numbers, gemma = ran.stdout.splitlines()
  assert path.startswith(str(site)) and numbers.split()[0] == "2000" and gemma == "gemma3-270m gemma"


@pytest.mark.parametrize("args,message", [
    (("--model", "gpt2"), "--model gpt2: not a built-in model; expected one of demo, smollm2-135m, gemma3-270m"),
    (("--model", "gemma3-270m", "--config", "configs/tiny_lora.py"), "give --model (a built-in model with its "
                                                                      "recipe) or --config, not both"),
])
def test_demo_model_flag_errors(args, message, tmp_path):
  result = itjax_in_process("demo", "--workdir", str(tmp_path / "w"), *args)
  assert result.returncode == 1 and message in result.stderr, result.stderr
  assert not (tmp_path / "w").exists()
