"""launch/tpu.py and launch/gpu.sh: the commands their dry runs print, and the remote start run by a real shell."""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_tpu():
  spec = importlib.util.spec_from_file_location("launch_tpu", os.path.join(ROOT, "launch", "tpu.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


tpu = _load_tpu()


@pytest.fixture(autouse=True)
def no_gcloud(monkeypatch):
  """A dry run runs nothing: any command launch/tpu.py would really run fails the test."""
  class Refuse:
    PIPE = subprocess.PIPE

    @staticmethod
    def run(command, *args, **kwargs):
      raise AssertionError(f"launch/tpu.py ran {command}")
  monkeypatch.setattr(tpu, "subprocess", Refuse)


def _dry(capsys, subcommand, *argv) -> list[str]:
  assert tpu.main([subcommand, "--dry_run", *argv]) == 0
  return capsys.readouterr().out.splitlines()


def test_create_is_a_queued_resource_with_the_family_runtime(capsys):
  lines = _dry(capsys, "create", "--name", "s1", "--zone", "us-west4-a", "--type", "v5litepod-16", "--spot")
  assert lines == [
      "gcloud compute tpus queued-resources create s1 --node-id=s1 --accelerator-type=v5litepod-16 "
      "--runtime-version=v2-alpha-tpuv5-lite --zone=us-west4-a --spot",
      "gcloud compute tpus queued-resources describe s1 --zone=us-west4-a '--format=value(state.state)'"]
  lines = _dry(capsys, "create", "--name", "s2", "--zone", "europe-west4-a", "--project", "p1", "--type", "v6e-16",
               "--reserved", "--no_wait")
  assert lines == ["gcloud compute tpus queued-resources create s2 --node-id=s2 --accelerator-type=v6e-16 "
                   "--runtime-version=v2-alpha-tpuv6e --zone=europe-west4-a --project=p1 --reserved"]
  lines = _dry(capsys, "create", "--name", "s3", "--zone", "z", "--type", "v4-32", "--no_wait")  # on demand
  assert lines[0].endswith("--runtime-version=tpu-ubuntu2204-base --zone=z")


def test_setup_copies_the_repo_to_every_worker_and_installs(capsys):
  lines = _dry(capsys, "setup", "--name", "s1", "--zone", "z")
  assert len(lines) == 2
  scp, ssh = map(shlex.split, lines)
  assert scp[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", scp[5]] and scp[5].endswith("itjax-src.tar.gz")
  assert scp[6:] == ["s1:itjax-src.tar.gz", "--worker=all", "--zone=z"]
  assert ssh[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "s1", "--worker=all", "--zone=z"]
  assert "tar xzf ~/itjax-src.tar.gz -C ~/itjax" in ssh[8] and "pip install -q -e '.[tpu,gcs]'" in ssh[8]


def test_run_starts_the_command_detached_on_every_worker(capsys):
  lines = _dry(capsys, "run", "--name", "s1", "--zone", "z", "--job", "j", "--", ".venv/bin/itjax", "train",
               "--config", "configs/x.py", "--workdir", "gs://b/runs/x y")
  assert len(lines) == 1
  ssh = shlex.split(lines[0])
  assert ssh[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "s1", "--worker=all", "--zone=z"]
  remote = ssh[8].removeprefix("--command=")
  assert "setsid nohup bash -c" in remote and "> logs/j.worker$TPU_WORKER_ID.log 2>&1 < /dev/null &" in remote
  assert "agent-worker-number" in remote
  assert "'gs://b/runs/x y'" in shlex.split(remote.split("bash -c ", 1)[1])[0]


def test_remote_start_runs_detached_in_a_real_shell_and_records_the_exit_status(tmp_path):
  """The string sent to each worker, run by bash here (home and worker id stood in): quoting, log and exit file."""
  args = tpu.parser().parse_args(["run", "--name", "s", "--zone", "z", "--job", "j", "--", "sh", "-c",
                                  "echo \"it's $0 on worker $TPU_WORKER_ID\"; exit 3", "a b"])
  remote = tpu.run_commands(args)[0][-1].removeprefix("--command=")
  remote = remote.replace(tpu.REMOTE_DIR, str(tmp_path)).replace(tpu.WORKER_ID, "5")
  started = time.time()
  subprocess.run(["bash", "-c", remote], check=True, timeout=30)
  assert time.time() - started < 5  # detached: the ssh returns at once
  exit_file = tmp_path / "logs" / "j.worker5.exit"
  while not exit_file.exists() and time.time() - started < 30:
    time.sleep(0.05)
  time.sleep(0.1)
  assert exit_file.read_text().strip() == "3"
  assert (tmp_path / "logs" / "j.worker5.log").read_text() == "it's a b on worker 5\n"


def test_retries_plan_recreates_sets_up_and_starts_again(capsys):
  lines = _dry(capsys, "run", "--name", "s1", "--zone", "z", "--job", "j", "--retries", "2", "--type",
               "v5litepod-16", "--spot", "--", "echo", "hi")
  assert lines[0].startswith("gcloud compute tpus tpu-vm ssh s1 --worker=all")
  after = lines[lines.index("# when the slice is preempted (up to --retries times):") + 1:]
  assert after[0] == "gcloud compute tpus queued-resources delete s1 --zone=z --force --quiet"
  assert after[1].startswith("gcloud compute tpus queued-resources create s1 ") and after[1].endswith("--spot")
  assert "tpu-vm scp" in after[3] and "pip install" in after[4] and after[5] == lines[0]
  assert "logs/j.worker0.exit" in after[6] and "--worker=0" in after[6]


def test_logs_status_delete(capsys):
  assert _dry(capsys, "delete", "--name", "s1", "--zone", "z") == [
      "gcloud compute tpus queued-resources delete s1 --zone=z --force --quiet"]
  logs = _dry(capsys, "logs", "--name", "s1", "--zone", "z", "--worker", "2", "--job", "j", "--follow")
  assert logs == ["gcloud compute tpus tpu-vm ssh s1 --worker=2 --zone=z "
                  "'--command=tail -n 100 -F $(ls -t ~/itjax/logs/j.worker2.log | head -1)'"]
  status = _dry(capsys, "status", "--name", "s1", "--zone", "z")
  assert status[0] == "gcloud compute tpus queued-resources describe s1 --zone=z"


@pytest.mark.parametrize("argv, message", [
    (["create", "--name", "s", "--zone", "z", "--type", "v9-8"], "unknown TPU family 'v9'"),
    (["run", "--name", "s", "--zone", "z"], "give the command after --"),
    (["run", "--name", "s", "--zone", "z", "--retries", "1", "--", "x"], "--retries needs --type"),
])
def test_bad_launch_input_is_one_line(capsys, argv, message):
  assert tpu.main(argv[:1] + ["--dry_run"] + argv[1:]) == 1
  captured = capsys.readouterr()
  assert captured.out == "" and message in captured.err and len(captured.err.strip().splitlines()) == 1


def test_gpu_dry_run_installs_cuda_jax_checks_the_gpu_then_runs(tmp_path):
  done = subprocess.run(["bash", os.path.join(ROOT, "launch", "gpu.sh"), "--dry_run", "echo", "hi"],
                        capture_output=True, text=True, check=True, env={**os.environ, "PYTHON": sys.executable})
  lines = done.stdout.splitlines()
  install = [line for line in lines if "pip install" in line]
  assert install == [] or install[0].endswith('-e .[gpu]')
  assert "platform == 'gpu'" in lines[-2] and lines[-1] == "echo hi"
  assert subprocess.run(["bash", os.path.join(ROOT, "launch", "gpu.sh")], capture_output=True).returncode == 2


FAKE_GCLOUD = """#!/bin/bash
echo "$*" >> "$FAKE_DIR/calls"
count() { n=$(( $(cat "$FAKE_DIR/$1" 2>/dev/null || echo 0) + 1 )); echo $n > "$FAKE_DIR/$1"; echo $n; }
case "$*" in
  *"queued-resources describe"*) sed -n "$(count describes)p" "$FAKE_DIR/states" ;;
  *"--worker=0"*".exit"*) [ "$(count exits)" -ge 2 ] && echo 0 ;;
esac
exit 0
"""


@pytest.mark.parametrize("preempted_twice", [False, True])
def test_retries_recreate_a_preempted_slice_and_start_again(tmp_path, monkeypatch, capsys, preempted_twice):
  """A stand-in gcloud whose slice is ACTIVE, then SUSPENDED (preempted), then ACTIVE again after re-creation; the
  command reports its end on the second look. Preempted again with no retry left, `run` stops and says so."""
  monkeypatch.setattr(tpu, "subprocess", subprocess)  # this test runs its stand-in gcloud
  (tmp_path / "gcloud").write_text(FAKE_GCLOUD)
  (tmp_path / "gcloud").chmod(0o755)
  states = ["ACTIVE", "SUSPENDED", "ACTIVE", "FAILED" if preempted_twice else "ACTIVE"]
  (tmp_path / "states").write_text("\n".join(states) + "\n")
  monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
  monkeypatch.setenv("FAKE_DIR", str(tmp_path))
  status = tpu.main(["run", "--name", "s1", "--zone", "z", "--job", "j", "--retries", "1", "--type",
                     "v5litepod-16", "--spot", "--poll", "0", "--", "echo", "hi"])

  def kind(line: str) -> str:
    words = line.split()
    return " ".join(words[2:4] if words[3] == "scp" else words[2:5]) + (
        " run" if "setsid" in line else " setup" if "tar xzf" in line else " exit?" if ".exit 2>" in line else "")

  calls = [kind(line) for line in (tmp_path / "calls").read_text().splitlines()]
  again = ["queued-resources delete s1", "queued-resources create s1", "queued-resources describe s1",
           "tpu-vm scp", "tpu-vm ssh s1 setup", "tpu-vm ssh s1 run", "queued-resources describe s1"]
  expected = ["tpu-vm ssh s1 run", "queued-resources describe s1", "tpu-vm ssh s1 exit?",
              "queued-resources describe s1"] + again
  out = capsys.readouterr()
  assert "re-creating it (1 of 1)" in out.out
  if preempted_twice:
    assert status == 1 and "s1: the slice is FAILED and no retries are left" in out.err
    assert calls == expected
  else:
    assert status == 0 and "the command ended on worker 0 with exit status 0" in out.out
    assert calls == expected + ["tpu-vm ssh s1 exit?"]
