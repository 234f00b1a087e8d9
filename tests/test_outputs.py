"""One rule for what every command writes: an existing output is replaced only with --overwrite, and an output is
never an input, inside one or holding one (not even with --overwrite); resumable outputs (distill, a sweep's runs)
are continued when they were made from the same inputs and settings.

Most cases stop before any model loads: they cost a flag parse. A refusal is exit 1 with one stderr line that names
the flag and the path, and leaves every file as it was (hashed before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap

import pytest

from itjax.errors import UserError
from itjax.io import outputs
from conftest import itjax_in_process

TINY_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "itjax", "configs",
                           "tiny_lora.py")


def snapshot(path) -> dict[str, str]:
  """{relative path: sha256} of a file, or of every file below a directory."""
  path = str(path)
  if os.path.isfile(path):
    return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
  found = {}
  for directory, _, files in os.walk(path):
    for name in files:
      full = os.path.join(directory, name)
      found[os.path.relpath(full, path)] = hashlib.sha256(open(full, "rb").read()).hexdigest()
  return found


def refused(result, flag: str, path, *words: str) -> None:
  """Exit 1 and one stderr line that names the flag, the path and `words`."""
  lines = [line for line in result.stderr.splitlines() if " is an alias of " not in line]
  assert result.returncode == 1, result.stderr
  assert len(lines) == 1 and f"{flag} {path}" in lines[0], result.stderr
  for word in words:
    assert word in lines[0], lines[0]


def write_jsonl(path, objects) -> None:
  path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")


def chat(question: str, answer: str) -> dict:
  return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def workdir(tmp_path):
  """A training workdir's layout in tmp_path/runs/run (tmp_path/runs is its parent): every case here stops before
  a checkpoint is read, so its files are stand-ins (test_export.py exports real ones)."""
  path = tmp_path / "runs" / "run"
  for name, text in (("checkpoints/2/state/data", "weights"), ("checkpoints/2/meta/meta.json", "{}"),
                     ("tasks/train.jsonl", "{}\n"), ("metrics.jsonl", '{"step": 2}\n'), ("config.json", "{}")):
    (path / name).parent.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text)
  return str(path)


# --- the checker ------------------------------------------------------------------------------------------------


def test_check_refuses_devices_and_a_workdir_s_own_entries_but_not_a_place_of_its_own(workdir, tmp_path):
  with pytest.raises(UserError, match="neither a file nor a directory"):
    outputs.check(os.devnull, "--out", overwrite=True)
  with pytest.raises(UserError, match=r"is inside --model .* \(its checkpoints\)"):
    outputs.check(os.path.join(workdir, "checkpoints", "x"), "--out", reads=[("--model", workdir)], directory=True)
  assert outputs.check(os.path.join(workdir, "eval"), "--out", reads=[("--model", workdir)], directory=True) is False
  model = tmp_path / "hf"
  model.mkdir()
  with pytest.raises(UserError, match="is inside --model"):  # any other directory input: nothing inside it
    outputs.check(str(model / "answers.jsonl"), "--out", reads=[("--model", str(model))])
  assert outputs.split("ifeval=a.jsonl,tasks=b") == ["a.jsonl", "b"]


def test_replace_dir_keeps_the_old_output_when_the_block_fails(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "old.txt").write_text("old")
  with pytest.raises(RuntimeError):
    with outputs.replace_dir(str(out)) as tmp:
      open(os.path.join(tmp, "new.txt"), "w").close()
      raise RuntimeError("stopped")
  assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["old.txt"]


# --- export -----------------------------------------------------------------------------------------------------


def test_export_never_replaces_its_workdir_nor_a_file(workdir, tmp_path):
  before = snapshot(tmp_path / "runs")
  run = lambda *a: itjax_in_process("export", "--workdir", workdir, "--format", "peft", *a)  # noqa: E731
  refused(run("--out", workdir, "--overwrite"), "--out", workdir, "is --workdir")
  parent = str(tmp_path / "runs")
  refused(run("--out", parent, "--overwrite"), "--out", parent, "contains --workdir")
  assert snapshot(tmp_path / "runs") == before
  file = tmp_path / "adapter"
  file.write_text("mine")
  refused(run("--out", str(file), "--overwrite"), "--out", file, "expected a directory")
  assert file.read_text() == "mine"


def test_export_refuses_a_used_directory_without_overwrite(workdir, tmp_path):
  out = tmp_path / "adapter"
  out.mkdir()
  (out / "old.txt").write_text("old")
  result = itjax_in_process("export", "--workdir", workdir, "--format", "peft", "--out", str(out))
  refused(result, "--out", out, "exists", "--overwrite")
  assert os.listdir(out) == ["old.txt"]


# --- curate -----------------------------------------------------------------------------------------------------


@pytest.fixture
def records(tmp_path):
  path = tmp_path / "in.jsonl"
  write_jsonl(path, [chat(f"Question {n}?", f"The answer is number {n}.") for n in range(4)])
  return path


def test_curate_refuses_an_existing_output_and_never_writes_its_input(records, tmp_path):
  out = tmp_path / "out.jsonl"
  out.write_text("mine\n")
  before = snapshot(records)
  refused(itjax_in_process("curate", "--data", str(records), "--out", str(out)), "--out", out, "--overwrite")
  assert out.read_text() == "mine\n"
  refused(itjax_in_process("curate", "--data", str(records), "--out", str(records), "--overwrite"), "--out",
          records, "is --data")
  assert snapshot(records) == before
  assert itjax_in_process("curate", "--data", str(records), "--out", str(out), "--overwrite").returncode == 0
  assert len(out.read_text().splitlines()) == 4


def test_curate_checks_its_removed_records_and_report_too(records, tmp_path):
  out = tmp_path / "out.jsonl"
  removed = tmp_path / "out.removed.jsonl"
  removed.write_text("mine\n")
  refused(itjax_in_process("curate", "--data", str(records), "--out", str(out)), "--out's removed records", removed)
  assert removed.read_text() == "mine\n" and not out.exists()
  removed.unlink()
  report = tmp_path / "report"
  report.write_text("mine")
  refused(itjax_in_process("curate", "--data", str(records), "--out", str(out), "--report", str(report)),
          "--report", report, "expected a directory")
  refused(itjax_in_process("curate", "--data", str(records), "--out", str(tmp_path)), "--out", tmp_path)
  assert report.read_text() == "mine" and not out.exists()


# --- generate ---------------------------------------------------------------------------------------------------


def test_generate_refuses_an_existing_output_and_its_inputs(tiny_hf_dir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  write_jsonl(prompts, [{"prompt": "Hello"}])
  out = tmp_path / "out.jsonl"
  out.write_text("mine\n")
  base = ("generate", "--model", tiny_hf_dir, "--prompts", str(prompts), "--max_new_tokens", "2")
  before = snapshot(prompts), snapshot(tiny_hf_dir)
  refused(itjax_in_process(*base, "--out", str(out)), "--out", out, "exists", "--overwrite")
  assert out.read_text() == "mine\n"
  refused(itjax_in_process(*base, "--output", str(prompts), "--overwrite"), "--out", prompts, "is --prompts")
  refused(itjax_in_process(*base, "--out", tiny_hf_dir, "--overwrite"), "--out", tiny_hf_dir, "is --model")
  inside = os.path.join(tiny_hf_dir, "answers.jsonl")
  refused(itjax_in_process(*base, "--out", inside), "--out", inside, "is inside --model")
  assert (snapshot(prompts), snapshot(tiny_hf_dir)) == before
  done = itjax_in_process(*base, "--out", str(out), "--overwrite")
  assert done.returncode == 0, done.stderr
  assert list(json.loads(out.read_text())) == ["prompt", "response"]


def test_generate_never_writes_over_the_workdir_it_reads(workdir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  write_jsonl(prompts, [{"prompt": "Hello"}])
  before = snapshot(tmp_path / "runs")
  base = ("generate", "--model", workdir, "--prompts", str(prompts), "--overwrite")
  refused(itjax_in_process(*base, "--out", workdir), "--out", workdir, "is --model")
  refused(itjax_in_process(*base, "--out", str(tmp_path / "runs")), "--out", tmp_path / "runs", "contains --model")
  metrics = os.path.join(workdir, "metrics.jsonl")
  refused(itjax_in_process(*base, "--out", metrics), "--out", metrics, "(its metrics.jsonl)")
  assert snapshot(tmp_path / "runs") == before


# --- make-tasks -------------------------------------------------------------------------------------------------


def test_make_tasks_refuses_an_existing_directory_and_a_file(tmp_path):
  out = tmp_path / "tasks"
  assert itjax_in_process("make-tasks", "--out", str(out), "--n", "10").returncode == 0
  before = snapshot(out)
  refused(itjax_in_process("make-tasks", "--out", str(out), "--n", "10", "--seed", "1"), "--out", out, "--overwrite")
  assert snapshot(out) == before
  assert itjax_in_process("make-tasks", "--out", str(out), "--n", "10", "--seed", "1", "--overwrite").returncode == 0
  assert snapshot(out) != before
  file = tmp_path / "file"
  file.write_text("mine")
  refused(itjax_in_process("make-tasks", "--out", str(file), "--overwrite"), "--out", file, "expected a directory")
  assert file.read_text() == "mine"


# --- eval -------------------------------------------------------------------------------------------------------


def test_eval_refuses_its_workdir_its_parent_a_file_and_a_used_directory(workdir, tmp_path):
  before = snapshot(tmp_path / "runs")
  run = lambda *a: itjax_in_process("eval", "--model", workdir, "--suites", "tasks", *a)  # noqa: E731
  refused(run("--out", workdir, "--overwrite"), "--out", workdir, "is --model")
  refused(run("--out", str(tmp_path / "runs"), "--overwrite"), "--out", tmp_path / "runs", "contains --model")
  checkpoints = os.path.join(workdir, "checkpoints")
  refused(run("--out", checkpoints, "--overwrite"), "--out", checkpoints, "is inside --model")
  assert snapshot(tmp_path / "runs") == before
  file = tmp_path / "results"
  file.write_text("mine")
  refused(run("--out", str(file)), "--out", file, "expected a directory")
  used = tmp_path / "eval"
  used.mkdir()
  (used / "results.json").write_text("{}")
  refused(run("--out", str(used)), "--out", used, "exists", "--overwrite")
  (tmp_path / "d").mkdir()
  data = tmp_path / "d" / "ifeval.jsonl"
  data.write_text("{}\n")
  refused(run("--data", f"ifeval={data}", "--out", str(tmp_path / "d")), "--out", tmp_path / "d", "contains --data")
  assert file.read_text() == "mine" and (used / "results.json").read_text() == "{}"


def test_evaluate_in_python_refuses_a_used_directory(tmp_path):
  import itjax
  used = tmp_path / "eval"
  used.mkdir()
  (used / "results.json").write_text("{}")
  with pytest.raises(FileExistsError, match="pass --overwrite"):
    itjax.evaluate("no/model", out=str(used))
  assert (used / "results.json").read_text() == "{}"


# --- distill ----------------------------------------------------------------------------------------------------


def test_distill_resumes_the_same_inputs_and_refuses_others(tiny_hf_dir, tmp_path):
  data = tmp_path / "in.jsonl"
  write_jsonl(data, [chat(f"Say {n}.", f"{n}") for n in range(2)])
  out = tmp_path / "out.jsonl"
  base = ("distill", "--model", tiny_hf_dir, "--out", str(out), "--max_new_tokens", "2", "--batch_size", "2")
  first = itjax_in_process(*base, "--data", str(data))
  assert first.returncode == 0, first.stderr
  assert (tmp_path / "out.distill.json").exists()
  # Interrupted after the first line (which is marked): a re-run keeps it and writes the second again.
  lines = out.read_text().splitlines()
  kept = json.dumps({**json.loads(lines[0]), "kept": True})
  out.write_text(kept + "\n")
  again = itjax_in_process(*base, "--data", str(data))
  assert again.returncode == 0, again.stderr
  again_lines = out.read_text().splitlines()
  assert len(again_lines) == 2 and again_lines[0] == kept
  # Other data (same path, other contents): refused, naming it; nothing changes.
  write_jsonl(data, [chat(f"Say {n} again.", f"{n}") for n in range(2)])
  before = snapshot(tmp_path)
  other = itjax_in_process(*base, "--data", str(data))
  refused(other, "--out", out, "--data sha256 ", " -> sha256 ", "--overwrite")
  refused(itjax_in_process(*base, "--data", str(data), "--max_new_tokens", "3"), "--out", out,
          "--max_new_tokens 2 -> 3")
  assert snapshot(tmp_path) == before
  over = itjax_in_process(*base, "--data", str(data), "--overwrite")
  assert over.returncode == 0, over.stderr
  assert [json.loads(line).get("kept") for line in out.read_text().splitlines()] == [None, None]
  assert "again" in out.read_text()


def test_distill_refuses_an_output_it_did_not_write_and_its_input(tiny_hf_dir, tmp_path):
  data = tmp_path / "in.jsonl"
  write_jsonl(data, [chat("Say 1.", "1")])
  out = tmp_path / "out.jsonl"
  out.write_text("mine\n")
  base = ("distill", "--model", tiny_hf_dir, "--max_new_tokens", "2")
  refused(itjax_in_process(*base, "--data", str(data), "--out", str(out)), "--out", out, "out.distill.json",
          "--overwrite")
  assert out.read_text() == "mine\n"
  before = snapshot(data)
  refused(itjax_in_process(*base, "--data", str(data), "--out", str(data), "--overwrite"), "--out", data, "is --data")
  assert snapshot(data) == before
  summary = tmp_path / "o.summary.json"
  summary.mkdir()
  refused(itjax_in_process(*base, "--data", str(data), "--out", str(tmp_path / "o.jsonl")), "--out's summary",
          summary, "expected a file")


# --- sweep ------------------------------------------------------------------------------------------------------


def _experiment(path) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(textwrap.dedent(f"""\
        CONFIG = {TINY_CONFIG!r}
        COMMON = {{"model": "some/model"}}
        RUNS = {{"a": {{"seed": 1}}}}
        """))
  return str(path)


def test_sweep_refuses_a_file_for_its_runs_and_an_experiment_inside_them(tmp_path):
  experiment = _experiment(tmp_path / "exp.py")
  file = tmp_path / "runs"
  file.write_text("mine")
  refused(itjax_in_process("sweep", experiment, "--runs_dir", str(file)), "--runs_dir", file)
  assert file.read_text() == "mine"
  runs = tmp_path / "other"
  runs.mkdir()
  (runs / "exp").write_text("mine")
  refused(itjax_in_process("sweep", experiment, "--runs_dir", str(runs), "--dry_run"), "--runs_dir", runs / "exp",
          "expected a directory")
  assert (runs / "exp").read_text() == "mine"
  inside = _experiment(tmp_path / "third" / "exp" / "exp.py")
  refused(itjax_in_process("sweep", inside, "--runs_dir", str(tmp_path / "third"), "--dry_run"), "--runs_dir",
          tmp_path / "third" / "exp", "contains the experiment file")
  (tmp_path / "fourth" / "exp").mkdir(parents=True)  # an existing runs directory is continued
  assert itjax_in_process("sweep", experiment, "--runs_dir", str(tmp_path / "fourth"), "--dry_run").returncode == 0
