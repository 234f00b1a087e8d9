"""Training: LoRA freezes the base, optimizer state only for trainable leaves, accumulation, resume, SIGTERM."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itjax.model import lora as lora_lib
from itjax.training.config import from_file, validate
from itjax.model.config import LoraSpec, PRESETS
from itjax.errors import NonFinite, UserError
from itjax.training.loop import Trainer, train
from itjax.training.setup import setup

from conftest import forward, itjax, itjax_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name="tiny_lora.py", arg="", **overrides):
  c = from_file(os.path.join(ROOT, "configs", name), arg)
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def train_args(**settings) -> list[str]:
  """`itjax train` on configs/tiny_lora.py with `settings` as --config.KEY=VALUE flags: the command line of the
  run that load_config(**settings) describes."""
  return ["train", "--config", os.path.join(ROOT, "configs", "tiny_lora.py")] + [
      f"--config.{key}={value}" for key, value in settings.items()]


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def run_steps(run, n):
  losses = []
  for _ in range(n):
    run.state, metrics = run.train_step(run.state, run.frozen, run.next_batch())
    losses.append(float(metrics["loss"]))
  return losses


def test_lora_trains_only_adapters_and_keeps_the_base_bitwise(tiny_hf_dir, tmp_path):
  run = setup(load_config(model=tiny_hf_dir), str(tmp_path))
  frozen_before = host(run.frozen)
  params_before = host(run.state["params"])
  assert set(lora_lib.flatten(params_before)) == {k for k in lora_lib.flatten(params_before)
                                                  if k.endswith(("lora_a", "lora_b"))}
  losses = run_steps(run, 4)
  assert all(np.isfinite(losses))
  for k, v in lora_lib.flatten(host(run.frozen)).items():
    np.testing.assert_array_equal(v, lora_lib.flatten(frozen_before)[k], err_msg=k)  # bitwise unchanged
  after = lora_lib.flatten(host(run.state["params"]))
  assert all(not np.array_equal(after[k], v) for k, v in lora_lib.flatten(params_before).items() if "lora_b" in k)
  # AdamW keeps two float32 moments per trainable value, and nothing for frozen ones.
  trainable_bytes = sum(x.nbytes for x in jax.tree.leaves(params_before))
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(run.state["opt_state"]) if x.ndim > 0)
  assert state_bytes == 2 * trainable_bytes


def test_full_fine_tuning_updates_every_param(tiny_hf_dir, tmp_path):
  run = setup(load_config(arg="full", model=tiny_hf_dir, steps=2), str(tmp_path))  # the step test_export compiles
  assert run.frozen == {} and not any("lora" in k for k in lora_lib.flatten(run.state["params"]))
  before = lora_lib.flatten(host(run.state["params"]))
  run_steps(run, 2)
  after = lora_lib.flatten(host(run.state["params"]))
  assert sorted(k for k in before if np.array_equal(before[k], after[k])) == []


def test_smollm2_rank8_trainable_fraction_matches_the_analytical_count():
  c = PRESETS["smollm2-135m"].replace(lora=LoraSpec(8, 16.0))
  shapes = lora_lib.flatten(jax.eval_shape(lambda: lora_lib.init_adapters(c, jax.random.PRNGKey(0))))
  d, f, k = c.dim, c.mlp_dim, c.num_kv_heads * c.head_dim
  per_layer = 8 * ((d + d) + (d + k) * 2 + (d + d) + 3 * (d + f))  # q, k, v, o, gate, up, down
  assert sum(s.size for s in shapes.values()) == c.num_layers * per_layer == 2_442_240
  assert round(2_442_240 / c.num_params, 4) == 0.0182


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch(tiny_hf_dir, tmp_path):
  from itjax.training.step import accumulate, make_loss
  run = setup(load_config(model=tiny_hf_dir, batch_size=8), str(tmp_path))
  rows = next(run.pipeline)
  rows["weights"][:4] *= (np.arange(rows["weights"].shape[1]) % 3 == 0)  # uneven target counts per microbatch
  assert len({int(w.sum()) for w in rows["weights"].reshape(4, 2, -1).sum(1)}) > 1
  loss_fn = make_loss(run.model_config, loss_chunk=32)
  key = jax.random.PRNGKey(0)
  one = accumulate(loss_fn, run.state["params"], run.frozen, {k: v[None] for k, v in rows.items()}, key)
  four = accumulate(loss_fn, run.state["params"], run.frozen, {k: v.reshape(4, 2, -1) for k, v in rows.items()},
                    key)
  np.testing.assert_allclose(float(four[1]["loss"]), float(one[1]["loss"]), atol=1e-5, rtol=0)
  for a, b in zip(jax.tree.leaves(four[0]), jax.tree.leaves(one[0])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [(r["step"], r["loss"]) for r in map(json.loads, f) if "loss" in r]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_to_resume_from(tiny_hf_dir, tmp_path, capfd):
  workdir = str(tmp_path / "w")
  args = [sys.executable, "-m", "itjax.cli", "train", "--config", os.path.join(ROOT, "configs", "tiny_lora.py"),
          f"--config.model={tiny_hf_dir}", "--config.steps=400", "--config.checkpoint_every=1000",
          "--config.eval_every=0", "--workdir", workdir]
  proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and len(losses(workdir) if os.path.exists(os.path.join(workdir, "metrics.jsonl"))
                                       else []) < 3:
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  stopped = json.loads(out.strip().splitlines()[-1])["stopped_at"]
  assert 3 <= stopped < 400 and "re-run the command to resume" in err
  assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(stopped)]
  capfd.readouterr()
  train(load_config(model=tiny_hf_dir, steps=stopped + 2, checkpoint_every=1000, eval_every=0), workdir)
  err = capfd.readouterr().err
  assert f"resuming {workdir} at step {stopped}" in err, err[-3000:]
  assert [s for s, _ in losses(workdir)][-2:] == [stopped + 1, stopped + 2]


def logged_steps(workdir):
  """The steps of metrics.jsonl's loss lines, read while a run may be writing (a half line is not a step yet)."""
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return [r["step"] for r in map(json.loads, f) if "loss" in r]
  except (OSError, ValueError):
    return []


@pytest.mark.slow
def test_exit_and_kill_9_at_three_moments_resume_to_the_run_that_was_never_stopped(tiny_hf_dir, tmp_path):
  """A run that ends at step 3 (a clean exit), then `kill -9` at three seeded moments (start-up, steps, checkpoint
  saves, metric writes: wherever they land), then a re-run: the same losses and params as an uninterrupted run,
  each step once in metrics.jsonl; a half-written last line is dropped. Two weighted data files: where the data
  pipeline was resumes too."""
  import random
  from itjax.interop.checkpoint import read_trained
  rng = random.Random(7)
  settings = {"model": tiny_hf_dir, "data.train": "{workdir}/tasks/train.jsonl:0.75,{workdir}/tasks/heldout.jsonl:0.25",
              "steps": 12, "checkpoint_every": 2, "eval_every": 0, "keep_checkpoints": 2}
  args = train_args(**settings)
  straight, workdir = str(tmp_path / "straight"), str(tmp_path / "killed")
  train(load_config(**settings), straight)  # in this process: the kills need processes, the references do not
  train(load_config(**{**settings, "steps": 3}), workdir)
  assert losses(workdir) == losses(straight)[:3]
  cut = []
  for _ in range(3):
    proc = subprocess.Popen([sys.executable, "-m", "itjax.cli", *args, "--workdir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target, deadline = rng.randint(1, 11), time.time() + 300
    while proc.poll() is None and time.time() < deadline and len(logged_steps(workdir)) < target:
      time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.6))
    proc.kill()
    proc.wait()
    cut.append(logged_steps(workdir)[-1:])
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 5, "loss": 0.12')  # a write cut in half by the kill
  final = itjax_in_process(*args, "--workdir", workdir)  # the re-run: in this process, as the references
  assert final.returncode == 0 and "resuming" in final.stderr, final.stderr[-3000:]
  assert losses(workdir) == losses(straight) and logged_steps(workdir) == list(range(1, 13)), cut
  trained, want = (lora_lib.flatten(read_trained(w)[0]) for w in (workdir, straight))
  assert sorted(trained) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(np.asarray(trained[k]), np.asarray(want[k]), err_msg=k)


def test_metrics_reach_tensorboard_without_importing_torch(tmp_path):
  """tensorboardX imports torch whenever it is installed (1.9 s of every run's start, for nothing itjax uses)."""
  script = ("import sys; from itjax.training.metrics import MetricsWriter; w = MetricsWriter(sys.argv[1]); "
            "w.write(1, {'loss': 0.5}); w.close(); print('torch' in sys.modules)")
  done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
  (events,) = os.listdir(tmp_path / "tensorboard")
  assert b"loss" in (tmp_path / "tensorboard" / events).read_bytes()


@pytest.mark.parametrize("override,message", [
    ("--config.lora.rnak=4", "rnak"),
    ("--config.steps=ten", "steps"),
    ("--config.lora.rank=0", "config.lora.rank must be > 0"),
    ("--config.mesh=(3,1,1)", "mesh .* needs 3 devices"),
    ("--config.data.train=nowhere.jsonl", "config.data.train names a file that does not exist"),
    ("--config.batch_size=-2", "config.batch_size must be > 0"),
    ("--config.compute_dtype=float16", "config.compute_dtype must be float32 or bfloat16"),
])
def test_bad_config_names_the_key(tiny_hf_dir, tmp_path, override, message):
  result = itjax_in_process("train", "--config", os.path.join(ROOT, "configs", "tiny_lora.py"),
                            f"--config.model={tiny_hf_dir}", override, "--workdir", str(tmp_path / "w"))
  assert result.returncode != 0
  assert __import__("re").search(message, result.stderr), result.stderr[-2000:]


def test_configs_validate():
  for name, arg in [("smollm2_135m_lora.py", ""), ("smollm2_135m_lora.py", "smoke"), ("tiny_lora.py", "full")]:
    c = load_config(name, arg, model="demo")
    validate(c)
  c.data.chat_template = "chatm1"  # a typo of a built-in name is refused before anything loads
  with pytest.raises(ValueError, match="config.data.chat_template: chat template 'chatm1' .* did you mean 'chatml'"):
    validate(c)


@pytest.mark.slow
def test_a_workdir_loads_as_the_trained_model(tiny_hf_dir, tmp_path):
  """`itjax generate --model WORKDIR`: the base with the final LoRA merged gives the trained params' logits."""
  from itjax.interop.loading import load_model
  workdir = str(tmp_path / "w")
  config = load_config(model=tiny_hf_dir, steps=3, eval_every=0)
  run = setup(config, workdir)
  Trainer(run).fit()
  tokens = np.asarray([run.tokenizer.encode_chat([{"role": "user", "content": "Sort: b, a."}])])
  trained = lora_lib.join(host(run.state["params"]), host(run.frozen))
  want = forward(run.model_config.replace(remat="none"), trained, tokens)
  loaded = load_model(workdir)
  assert loaded.config.lora is None and loaded.tokenizer.encode("a b") == run.tokenizer.encode("a b")
  got = forward(loaded.config, loaded.params, tokens)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=0)
  assert np.abs(np.asarray(trained["layers"]["attn"]["q_proj"]["lora_b"])).max() > 0  # the adapters did train


def check_smoke_run(workdir: str) -> None:
  """Runs `itjax train` on the SmolLM2 smoke config into `workdir` (in this process) and checks its log and files
  (called by test_export's smoke test, which exports the same run: one SmolLM2 training in the suite)."""
  result = itjax_in_process("train", "--config", os.path.join(ROOT, "configs", "smollm2_135m_lora.py:smoke"),
                            "--workdir", workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["trainable_params"] == 2_442_240 and summary["steps"] == 4
  dropped = re.search(r"data.drop_types: left out (\d+) of the 64 records of data.train \(arithmetic (\d+), "
                      r"date_add (\d+), paragraphs (\d+), sort_numbers (\d+), sort_words (\d+)\)", result.stderr)
  assert dropped and 0 < int(dropped[1]) < 64 and all(int(n) > 0 for n in dropped.groups()[1:]), result.stderr[-2000:]
  expected = re.findall(r"expected duration: about ([\d.]+) min in all \(4 steps at ([\d.]+) s; the evaluations before "
                        r"the first step took [\d.]+ min and run again after the last\)", result.stderr)
  assert len(expected) == 1 and float(expected[0][0]) > 0 and float(expected[0][1]) > 0, result.stderr[-2000:]
  assert [s for s, _ in losses(workdir)] == [1, 2, 3, 4]
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))
  assert os.listdir(os.path.join(workdir, "checkpoints")) and os.path.getsize(os.path.join(workdir, "loss.png")) > 0
  assert summary["eval_loss_end"] < summary["eval_loss_start"]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:  # generation suites before the first step, after the last
    lines = [r for r in map(json.loads, f) if any(k.startswith("eval/") for k in r)]
  evals = [r for r in lines if "eval/tasks/seen" in r]
  assert [r["step"] for r in evals] == [0, 4] and all(r["eval/tasks/n_heldout"] == 4 for r in evals)


@pytest.mark.slow
def test_a_non_finite_loss_stops_with_the_step_and_metric(tiny_hf_dir, tmp_path):
  config = load_config(model=tiny_hf_dir, steps=6, eval_every=0, log_every=5, checkpoint_every=2)
  run = setup(config, str(tmp_path / "w"))
  step_fn = run.train_step

  def poisoned(state, frozen, batch):  # the third step's loss comes back NaN
    state, metrics = step_fn(state, frozen, batch)
    metrics = dict(metrics, loss=jnp.where(state["step"] == 3, jnp.nan, metrics["loss"]))
    return state, metrics

  run.train_step = poisoned
  with pytest.raises(NonFinite, match=r"step 3: loss is nan"):
    Trainer(run).fit()
  assert os.listdir(tmp_path / "w" / "checkpoints") == ["2"]  # the NaN state was not saved over the good one


def test_self_replay_is_written_once_and_mixed_into_training(tiny_hf_dir, tmp_path, monkeypatch):
  """replay.n > 0: the base answers that many general prompts into WORKDIR/replay before training (empty answers
  rejected), the kept ones join data.train at replay.weight, and a second setup generates nothing."""
  from itjax.curate import distill
  asked = []

  def answers(model, chats, options, on_answer):
    for i, chat in enumerate(chats):
      asked.append(chat[-1]["content"])
      on_answer(i, "" if len(asked) == 2 else f"My own answer number {len(asked)}.", True)

  monkeypatch.setattr(distill, "generate_answers", answers)
  config = load_config(model=tiny_hf_dir, **{"replay.n": 5, "replay.weight": 0.5})
  run = setup(config, str(tmp_path))
  lines = [json.loads(l) for l in open(tmp_path / "replay" / "replay.jsonl")]
  assert len(asked) == 5 and [l["messages"][0]["content"] for l in lines] == asked[:1] + asked[2:]
  assert json.load(open(tmp_path / "replay" / "replay.summary.json"))["rejected_by_reason"]["empty"] == 1
  assert [(os.path.basename(s.name), s.weight) for s in run.pipeline.sources][-1] == ("replay.jsonl", 0.5)
  setup(config, str(tmp_path))
  assert len(asked) == 5


def test_self_replay_that_keeps_nothing_stops_naming_the_key(tiny_hf_dir, tmp_path, monkeypatch):
  from itjax.curate import distill
  monkeypatch.setattr(distill, "generate_answers", lambda model, chats, options, on_answer: [
      on_answer(i, "cut off", False) for i in range(len(chats))])
  with pytest.raises(ValueError, match=r"config.replay: none of the base's 3 answers was kept \(rejected: "
                                       r"truncated 3\); raise replay.max_new_tokens"):
    setup(load_config(model=tiny_hf_dir, **{"replay.n": 3}), str(tmp_path))


def test_base_weights_are_hashed_once_and_by_their_weights_only(tiny_hf_dir, tmp_path):
  """The resume check's hash: unchanged when only JSON changes (a chat template edit), changed with the weights,
  and read from the cache while (path, size, mtime) hold."""
  import shutil
  from itjax.interop.checkpoint import weights_sha256
  model, cache = tmp_path / "model", str(tmp_path / "cache")
  shutil.copytree(tiny_hf_dir, model)
  first = weights_sha256(str(model), cache)
  config = json.loads((model / "tokenizer_config.json").read_text())
  (model / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": "{{ messages }}"}))
  assert weights_sha256(str(model), cache) == first
  store = tmp_path / "cache" / "weights_sha256.json"
  known = json.loads(store.read_text())
  store.write_text(json.dumps({k: "remembered" for k in known}))
  assert weights_sha256(str(model), cache) == "remembered"  # no re-read of an unchanged file
  weights = model / "model.safetensors"
  data = bytearray(weights.read_bytes())
  data[-1] ^= 1
  weights.write_bytes(bytes(data))
  assert weights_sha256(str(model), cache) not in (first, "remembered")


def _small_files(limit: int):
  """For a child process: writes past `limit` bytes fail (EFBIG) as on a full disk, instead of killing it."""
  def apply():
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
  return apply


@pytest.mark.slow
def test_a_save_the_filesystem_refuses_stops_naming_the_workdir_and_keeps_the_checkpoint_before(tiny_hf_dir,
                                                                                                 tmp_path, capfd):
  """A save that cannot be written (here a file size limit, as a full disk does it) stops the run with one line
  naming the workdir and the step; the previous checkpoint is whole, and once there is room the run resumes."""
  workdir = str(tmp_path / "w")
  settings = {"model": tiny_hf_dir, "checkpoint_every": 2, "eval_every": 0}
  args = train_args(**settings) + ["--workdir", workdir]
  train(load_config(steps=2, **settings), workdir)  # in this process; the run that hits the limit is a process
  # Not in the run's compilation cache: its own cache writes would be cut short by the limit too.
  alone = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  full = itjax(*args, "--config.steps=4", preexec_fn=_small_files(4096), env=alone)
  assert full.returncode == 1, full.stderr[-3000:]
  said = [line for line in full.stderr.splitlines() if line.startswith("itjax train: error:")]  # orbax's threads log
  assert said == [  # beside it, in their own order
      f"itjax train: error: {workdir}: the checkpoint of step 4 could not be written (File too large); the checkpoint "
      "of step 2 is intact: make room and run the same command again to resume from it"], full.stderr[-3000:]
  assert "Traceback" not in full.stderr[full.stderr.index(said[0]):], full.stderr[-3000:]  # nothing after it
  capfd.readouterr()
  train(load_config(steps=4, **settings), workdir)
  err = capfd.readouterr().err
  assert f"resuming {workdir} at step 2" in err, err[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


@pytest.mark.slow
def test_a_damaged_checkpoint_is_skipped_or_stops_when_strict(tiny_hf_dir, tmp_path, capfd):
  """The newest checkpoint cannot be restored (files cut short, or bad metadata): the run says which step in one
  line (stderr stays short), moves it aside and resumes from the one before, to the same losses as a run that never
  broke; resume=strict stops."""
  from itjax.interop.checkpoint import DamagedCheckpoint
  workdir = str(tmp_path / "w")
  settings = dict(model=tiny_hf_dir, checkpoint_every=2, eval_every=0, keep_checkpoints=3)
  straight = load_config(steps=6, **settings)
  strict = load_config(steps=6, resume="strict", **settings)
  train(straight, str(tmp_path / "straight"))
  train(load_config(steps=4, **settings), workdir)
  state = os.path.join(workdir, "checkpoints", "4", "state")
  for root, _, files in os.walk(state):  # a save cut short: every file of the step loses its second half
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(root, name)) // 2)
  with pytest.raises(DamagedCheckpoint, match=r"checkpoints/4: the checkpoint of step 4 cannot be restored .*strict"):
    train(strict, workdir)
  ran = itjax(*train_args(steps=6, **settings), "--workdir", workdir)  # a process: orbax's leftovers print at exit
  assert ran.returncode == 0, ran.stderr[-3000:]
  bar = re.compile(r"^(\r?train: +\d+%.*)+$")  # the progress bar: one line on a terminal, a line per update in a file
  lines = [line for line in ran.stderr.split("\n") if line.strip() and not bar.match(line)]
  assert len(lines) < 10, ran.stderr[-5000:]  # not the hundreds of lines of orbax's failed reads
  assert re.search(r"^warning: .*checkpoints/4: the checkpoint of step 4 cannot be restored \(.+\); moved to "
                   r".*checkpoints/4\.damaged, resuming from step 2$", lines[0]), lines
  assert f"resuming {workdir} at step 2" in lines[1]
  assert losses(workdir) == losses(str(tmp_path / "straight"))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "4.damaged", "6"]
  with open(os.path.join(workdir, "checkpoints", "6", "state", "_METADATA"), "w") as f:
    f.write("{not json")
  with pytest.raises(DamagedCheckpoint, match=r"checkpoints/6: the checkpoint of step 6 cannot be restored"):
    train(strict, workdir)
  from itjax.interop.checkpoint import read_trained  # export and generate pass over it, read-only, and say which step
  capfd.readouterr()
  _, meta = read_trained(workdir)
  err = capfd.readouterr().err
  assert "checkpoints/6: the checkpoint of step 6 cannot be restored" in err and "using an older one" in err
  assert f"{workdir}: the checkpoint of step 4\n" in err and os.path.isdir(os.path.join(workdir, "checkpoints", "6"))
  with pytest.raises(DamagedCheckpoint, match=r"checkpoints/6: the checkpoint of step 6 cannot be restored"):
    read_trained(workdir, step=6)


def files_of(root):
  """Every file under root: relative path -> (size, mtime)."""
  return {os.path.relpath(os.path.join(d, f), root): (os.stat(os.path.join(d, f)).st_size,
                                                      os.stat(os.path.join(d, f)).st_mtime_ns)
          for d, _, names in os.walk(root) for f in names}


def other_weights(model_dir, out):
  """A copy of an HF model directory with one weight changed: the same architecture, another base."""
  import shutil

  from safetensors.numpy import load_file, save_file
  shutil.copytree(model_dir, out)
  path = os.path.join(out, "model.safetensors")
  tensors = load_file(path)
  name = sorted(tensors)[0]
  tensors[name] = tensors[name] + 1.0
  save_file(tensors, path, metadata={"format": "pt"})
  return str(out)


@pytest.mark.slow
def test_a_changed_config_stops_naming_the_keys_and_restart_keeps_the_old_run(tiny_hf_dir, tmp_path):
  """Other LoRA settings, another method or another base model on a finished or a half-finished workdir are not
  damage: the run stops before it writes anything, naming each changed key with its old and new value;
  config.resume=restart moves the old run into previous/1 and starts over."""
  from itjax.training.resume import RUN_FILES
  workdir = str(tmp_path / "w")
  settings = dict(model=tiny_hf_dir, eval_every=0, checkpoint_every=1)
  train(load_config(steps=2, **settings), workdir)
  before = files_of(workdir)
  changes = (({"lora.rank": 2}, r"lora.rank 4 -> 2"),
             ({"lora.targets": (".*/q_proj/kernel",), "lora.alpha": 8.0},
              r"lora.alpha 16.0 -> 8.0; lora.targets \[.*\] -> \['.\*/q_proj/kernel'\]"),
             ({"method": "full"}, r"method 'lora' -> 'full'"),
             ({"model": other_weights(tiny_hf_dir, tmp_path / "other")},
              r"model .*tiny-llama.* \(weights sha256 \w{12}\) -> .*other \(weights sha256 \w{12}\)"))
  for steps in (2, 4):  # the run finished, and half-finished for the new config
    for overrides, said in changes:
      with pytest.raises(UserError, match=r"its checkpoints were trained with other settings \(.*" + said +
                         r".*--config.resume=restart"):
        train(load_config(steps=steps, **{**settings, **overrides}), workdir)
      assert files_of(workdir) == before, overrides  # nothing created, rewritten or touched
  summary = train(load_config(steps=2, resume="restart", **settings, **{"lora.rank": 2}), workdir)
  assert summary["resumed_from"] is None and summary["steps"] == 2
  kept = {k: v for k, v in before.items() if k.split(os.sep)[0] in RUN_FILES}
  assert kept and files_of(os.path.join(workdir, "previous", "1")) == kept  # the old run, whole
  assert [s for s, _ in losses(workdir)] == [1, 2]  # the new run's own log


@pytest.mark.slow
def test_other_data_on_resume_stops_naming_what_changed(tiny_hf_dir, tmp_path):
  """The batches a run resumes must be the ones it was trained on: another data setting, or the same file with other
  contents, stops the run before it writes, naming the setting (or the contents)."""
  workdir = str(tmp_path / "w")
  settings = dict(model=tiny_hf_dir, eval_every=0, checkpoint_every=1)
  train(load_config(steps=2, **settings), workdir)
  before = files_of(workdir)
  with pytest.raises(UserError, match=r"trained on other data \(max_len 512 -> 384\); train into another --workdir"):
    train(load_config(steps=4, max_len=384, **settings), workdir)
  train_file = os.path.join(workdir, "tasks", "train.jsonl")
  with open(train_file) as f:
    lines = f.readlines()
  with open(train_file, "w") as f:
    f.writelines(lines[1:])
  edited = files_of(workdir)
  with pytest.raises(UserError, match=r"trained on other data \(the same settings, but the data files' contents "
                                      r"changed\)"):
    train(load_config(steps=4, **settings), workdir)
  assert files_of(workdir) == edited and {k: v for k, v in edited.items() if "tasks" not in k} == {
      k: v for k, v in before.items() if "tasks" not in k}


@pytest.mark.slow
def test_when_no_checkpoint_restores_the_run_stops_and_changes_nothing(tiny_hf_dir, tmp_path):
  """Every checkpoint damaged: config.resume=auto stops naming the workdir (it used to start over from step 1 and
  replace best/), and leaves every file as it was; restart moves the run aside."""
  from itjax.interop.checkpoint import DamagedCheckpoint
  workdir = str(tmp_path / "w")
  settings = dict(model=tiny_hf_dir, steps=2, eval_every=0, checkpoint_every=1)
  train(load_config(**settings), workdir)
  for root, _, names in os.walk(os.path.join(workdir, "checkpoints")):
    for name in names:
      if os.sep + "state" in root:  # every step's arrays cut short
        with open(os.path.join(root, name), "r+b") as f:
          f.truncate(os.path.getsize(os.path.join(root, name)) // 2)
  before = files_of(workdir)
  assert any(k.startswith("best" + os.sep) for k in before)
  with pytest.raises(DamagedCheckpoint, match=r"w: none of its 2 checkpoints can be restored \(step 2: .*nothing was "
                                              r"changed.*--config.resume=restart"):
    train(load_config(**settings), workdir)
  assert files_of(workdir) == before
  summary = train(load_config(resume="restart", **settings), workdir)
  assert summary["resumed_from"] is None and os.path.isdir(os.path.join(workdir, "previous", "1", "best"))


def test_a_workdir_another_process_trains_in_is_refused_and_freed_when_training_ends(tiny_hf_dir, tmp_path):
  """Two runs never write one workdir: while another process holds it, train stops before writing anything; the
  lock goes with the run (training again in the same process works, and another process may go on after it)."""
  workdir = tmp_path / "w"
  workdir.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                             f"fd = os.open({str(workdir)!r}, os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX)\n"
                             "print('held', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    settings = dict(model=tiny_hf_dir, steps=1, eval_every=0, checkpoint_every=1)
    with pytest.raises(UserError, match=r"w: another process is training in this workdir"):
      train(load_config(**settings), str(workdir))
    assert os.listdir(workdir) == []
  finally:
    holder.kill()
    holder.wait()
  train(load_config(**settings), str(workdir))
  train(load_config(**dict(settings, steps=2)), str(workdir))  # the same process again: resumes
  probe = subprocess.run([sys.executable, "-c", "import fcntl, os\n"
                          f"fd = os.open({str(workdir)!r}, os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX | "
                          "fcntl.LOCK_NB); print('free')"], capture_output=True, text=True, timeout=60)
  assert probe.stdout.strip() == "free", probe.stderr[-500:]
