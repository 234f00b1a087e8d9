"""A workdir in a bucket: checkpoints there, the other files through a local mirror, and a resume from the bucket on
a machine that has none of the run's files. The bucket is a local directory here, taken for a remote one."""

from __future__ import annotations

import json
import os

import pytest

from itjax.io import workdir as workdir_lib
from itjax.training.loop import train

from test_train import load_config, losses


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_a_bucket_workdir_resumes_on_a_fresh_machine_to_the_uninterrupted_run(tiny_hf_dir, tmp_path, monkeypatch):
  bucket = str(tmp_path / "bucket" / "run")
  monkeypatch.setattr(workdir_lib, "is_remote", lambda w: w == bucket)
  config = lambda steps: load_config(model=tiny_hf_dir, steps=steps, checkpoint_every=3, eval_every=3)
  straight = str(tmp_path / "straight")
  train(config(6), straight)

  monkeypatch.setenv("ITJAX_MIRROR_DIR", str(tmp_path / "machine1"))
  train(config(3), bucket)  # preempted after the checkpoint of step 3
  mirror1 = workdir_lib.local(bucket)
  assert mirror1.startswith(str(tmp_path / "machine1")) and not os.path.exists(os.path.join(mirror1, "checkpoints"))
  assert _lines(os.path.join(bucket, "metrics.jsonl")) == _lines(os.path.join(mirror1, "metrics.jsonl"))
  assert os.path.isfile(os.path.join(bucket, "tasks", "train.jsonl"))
  assert os.path.isfile(os.path.join(bucket, "config.json")) and os.listdir(os.path.join(bucket, "checkpoints"))

  # Another machine: no mirror. The tasks come from the bucket (never generated again), the run resumes at step 3.
  monkeypatch.setenv("ITJAX_MIRROR_DIR", str(tmp_path / "machine2"))
  import itjax.data.tasks
  monkeypatch.setattr(itjax.data.tasks, "write_splits", lambda *a, **k: pytest.fail("tasks generated again"))
  summary = train(config(6), bucket)
  assert summary["resumed_from"] == 3
  assert losses(bucket) == losses(straight) and [s for s, _ in losses(bucket)] == [1, 2, 3, 4, 5, 6]
  assert os.path.isfile(os.path.join(bucket, "loss.png"))
  assert _lines(os.path.join(bucket, "metrics.jsonl")) == _lines(os.path.join(workdir_lib.local(bucket),
                                                                                "metrics.jsonl"))


def test_mirror_push_and_pull_leave_checkpoints_to_orbax(tmp_path, monkeypatch):
  bucket = str(tmp_path / "bucket")
  monkeypatch.setattr(workdir_lib, "is_remote", lambda w: w == bucket)
  monkeypatch.setenv("ITJAX_MIRROR_DIR", str(tmp_path / "mirror"))
  os.makedirs(os.path.join(bucket, "checkpoints", "3"))
  os.makedirs(os.path.join(bucket, "tasks"))
  (tmp_path / "bucket" / "tasks" / "train.jsonl").write_text("{}\n")
  (tmp_path / "bucket" / "stale.txt").write_text("old")
  files = workdir_lib.prepare(bucket)
  assert sorted(os.listdir(files)) == ["stale.txt", "tasks"]  # checkpoints are not mirrored
  with open(os.path.join(files, "metrics.jsonl"), "w") as f:
    f.write('{"step": 1}\n')
  assert workdir_lib.push(bucket) == 3 and workdir_lib.push(bucket) == 0  # unchanged files are not sent again
  assert (tmp_path / "bucket" / "metrics.jsonl").read_text() == '{"step": 1}\n'
  os.remove(os.path.join(files, "stale.txt"))
  (tmp_path / "mirror" / "leftover").write_text("x")
  again = workdir_lib.prepare(bucket)  # the mirror is replaced by the bucket's copy
  assert again == files and sorted(os.listdir(again)) == ["metrics.jsonl", "stale.txt", "tasks"]
  monkeypatch.undo()
  assert workdir_lib.local("runs/x") == "runs/x" and not workdir_lib.is_remote("runs/x")
  assert workdir_lib.local("gs://b/runs/x").endswith(os.path.join("gs", "b", "runs", "x", "process0"))


def test_reading_a_directory_without_checkpoints_creates_nothing(tmp_path):
  from itjax.interop import checkpoint
  empty = tmp_path / "not_a_run"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    checkpoint.read_meta(str(empty))
  assert list(empty.iterdir()) == []
