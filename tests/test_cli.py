"""`itjax generate` end to end on a tiny HF model directory."""

import json
import subprocess
import sys


def itjax(*args):
  return subprocess.run([sys.executable, "-m", "itjax.cli", *args], capture_output=True, text=True, timeout=600)


def test_generate_prompts_file(tiny_hf_dir, tmp_path):
  prompts = tmp_path / "in.jsonl"
  records = [{"prompt": "What is the capital of France?", "id": 1},
             {"messages": [{"role": "system", "content": "Answer briefly."},
                           {"role": "user", "content": "List three colours."}], "id": 2},
             {"prompt": "Hello", "id": 3}]
  prompts.write_text("\n".join(json.dumps(r) for r in records) + "\n")
  out = tmp_path / "out.jsonl"
  result = itjax("generate", "--model", tiny_hf_dir, "--prompts_file", str(prompts), "--output", str(out),
                 "--max_new_tokens", "8", "--batch_size", "2", "--temperature", "0.7", "--top_p", "0.9",
                 "--top_k", "20", "--seed", "3")
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [{k: v for k, v in line.items() if k != "response"} for line in lines] == records
  assert all(isinstance(line["response"], str) for line in lines)
  assert "prompt/s" in result.stderr and "tok/s" in result.stderr  # the progress bar


def test_generate_single_prompt_raw(tiny_hf_dir):
  result = itjax("generate", "--model", tiny_hf_dir, "--prompt", "The quick brown", "--raw", "--max_new_tokens", "4")
  assert result.returncode == 0, result.stderr


def test_generate_reports_bad_line(tiny_hf_dir, tmp_path):
  prompts = tmp_path / "bad.jsonl"
  prompts.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
  result = itjax("generate", "--model", tiny_hf_dir, "--prompts_file", str(prompts), "--output",
                 str(tmp_path / "o.jsonl"))
  assert result.returncode == 1
  assert "bad.jsonl:2: expected a 'prompt' string or a 'messages' list" in result.stderr


def test_generate_usage_errors(tmp_path):
  result = itjax("generate", "--model", str(tmp_path / "missing"), "--prompt", "hi")
  assert result.returncode == 1 and "does not exist" in result.stderr
  result = itjax("generate", "--prompt", "hi")
  assert result.returncode == 1 and "--model is required" in result.stderr
  result = itjax("frobnicate")
  assert result.returncode == 2 and "usage: itjax" in result.stderr
