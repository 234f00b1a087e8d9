"""The command line end to end: `generate` on a tiny HF model directory, `inspect-data`, `make-tasks`."""

import json
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
  result = itjax_in_process("generate", "--model", tiny_hf_dir, "--prompts_file", str(prompts), "--output",
                            str(out), "--max_new_tokens", "8", "--batch_size", "2", "--temperature", "0.7",
                            "--top_p", "0.9", "--top_k", "20", "--seed", "3")
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [{k: v for k, v in line.items() if k != "response"} for line in lines] == records
  assert all(isinstance(line["response"], str) for line in lines)
  assert "prompt/s" in result.stderr and "tok/s" in result.stderr  # the progress bar


def test_generate_single_prompt_raw(tiny_hf_dir):
  result = itjax_in_process("generate", "--model", tiny_hf_dir, "--prompt", "The quick brown", "--raw",
                            "--max_new_tokens", "4")
  assert result.returncode == 0, result.stderr


def test_generate_reports_bad_line(tiny_hf_dir, tmp_path):
  prompts = tmp_path / "bad.jsonl"
  prompts.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
  result = itjax_in_process("generate", "--model", tiny_hf_dir, "--prompts_file", str(prompts), "--output",
                 str(tmp_path / "o.jsonl"))
  assert result.returncode == 1
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

  def boom():
    raise error()

  monkeypatch.setattr(cli, "cmd_make_tasks", boom)
  argv = cli._parse(["itjax", "make-tasks"])
  with pytest.raises(SystemExit) as stop:
    cli.main(argv)
  err = capsys.readouterr().err
  assert stop.value.code == code
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
  probe = ("import itjax.demo as d; c = d.load_config(); "
           "print(d.CONFIG); print(c.tasks.n, c.steps)")
  ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(site)})
  assert ran.returncode == 0, ran.stderr[-2000:]
  path, numbers = ran.stdout.splitlines()
  assert path.startswith(str(site)) and numbers.split()[0] == "2000"
