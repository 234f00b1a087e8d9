"""Two processes x 4 CPU devices (jax.distributed, gloo collectives) train as one process does."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

# Process 1 records every file it opens for writing (Python's audit hook) and prints the list when it exits.
AUDITED = r"""
import atexit, sys
written = set()
def hook(event, args):
  if event == "open" and isinstance(args[0], str) and args[1] and any(c in args[1] for c in "wax+"):
    written.add(args[0])
sys.addaudithook(hook)
atexit.register(lambda: print("WROTE " + repr(sorted(written)), flush=True))
from itjax.cli import run
sys.argv = ["itjax"] + sys.argv[1:]
run()
"""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


SETTINGS = {"checkpoint_every": 3, "eval_every": 0}


def in_this_process(model, workdir, steps):
  """The same run in the test's process, on its one device: the sharding tests already show that one device and
  8 train alike, so the references need no process of their own."""
  from itjax.training.loop import train
  from test_train import load_config
  return train(load_config(model=model, steps=steps, **SETTINGS), workdir)


def env(devices):
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  return dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")


def two_processes(args):
  port = free_port()
  procs = [subprocess.Popen([sys.executable, "-c", AUDITED, *args, f"--coordinator_address=localhost:{port}",
                             "--num_processes=2", f"--process_id={i}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(4)) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [(r["step"], r["loss"]) for r in map(json.loads, f) if "loss" in r]


def close(a, b):
  assert [s for s, _ in a] == [s for s, _ in b]
  np.testing.assert_allclose([l for _, l in a], [l for _, l in b], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume_in_one(tiny_hf_dir, tmp_path):
  """Two processes on a mesh that splits the batch and the model's columns alike, (2,2,2), against one process on
  one device; the two-process checkpoint resumes in one process, on one device."""
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  in_this_process(tiny_hf_dir, straight, 6)
  from test_train import train_args
  outs = two_processes(train_args(model=tiny_hf_dir, steps=3, mesh="(2,2,2)", **SETTINGS) + ["--workdir", split])
  close(losses(split), losses(straight)[:3])
  # Process 0 wrote the run's files and printed the summary; process 1 wrote nothing outside the checkpoints.
  (out0, _), (out1, err1) = outs
  assert json.loads(out0.strip().splitlines()[-2])["steps"] == 3
  wrote = eval(out1.strip().splitlines()[-1][len("WROTE "):])
  assert not [w for w in wrote if w.startswith(split) and "/checkpoints/" not in w and "/best/" not in w], wrote
  assert not [line for line in out1.splitlines() if line.startswith("{")], out1  # the summary: process 0's
  assert "resuming" not in err1 and "trainable params" not in err1 and "train:" not in err1, err1[-2000:]
  assert len(os.listdir(os.path.join(split, "tensorboard"))) == 1
  # The checkpoint written by 2 processes over 8 devices reads here, on one device, as export does.
  from itjax.interop.checkpoint import read_trained
  from itjax.model.lora import flatten
  trained, reference = flatten(read_trained(split, 3)[0]), flatten(read_trained(straight, 3)[0])
  assert trained.keys() == reference.keys()
  for k, v in trained.items():
    np.testing.assert_allclose(np.asarray(v), np.asarray(reference[k]), atol=1e-5, rtol=0, err_msg=k)
  # It resumes in one process on one device to the losses of the run never split.
  assert in_this_process(tiny_hf_dir, split, 6)["resumed_from"] == 3
  close(losses(split), losses(straight))


def test_the_coordinator_flags_go_together_and_the_process_id_is_in_range():
  from itjax.io import distributed
  from itjax.errors import UserError
  with pytest.raises(UserError, match=r"--coordinator_address, --num_processes and --process_id go together \(got "
                                      r"localhost:1, none, none\)"):
    distributed.initialize("localhost:1")
  with pytest.raises(UserError, match=r"--process_id 2 must be in 0..1 \(--num_processes 2\)"):
    distributed.initialize("localhost:1", 2, 2)
  distributed.initialize()  # one process, nothing in the environment: nothing happens
  assert distributed.primary()
