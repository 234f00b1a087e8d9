"""`itjax sweep`: an experiment file's runs, skipped once finished, a failed run reported, the summary; bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest

from itjax.sweep import sweep
from itjax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_lora.py")


def _experiment(tmp_path, body: str, name: str = "exp") -> str:
  path = tmp_path / f"{name}.py"
  path.write_text(textwrap.dedent(body))
  return str(path)


def _tiny(tmp_path, model: str, runs: str, extra: str = "") -> str:
  return _experiment(tmp_path, f"""
      CONFIG = {TINY!r}
      COMMON = {{"model": {model!r}, "steps": 2, "eval_every": 2, "checkpoint_every": 2, "eval_batches": 1,
                "tasks.n": 16, "batch_size": 4}}
      RUNS = {runs}
      {extra}
      """)


def _sweep(cwd, *args):
  return subprocess.run([sys.executable, "-m", "itjax.cli", "sweep", *args], cwd=cwd, capture_output=True,
                        text=True, timeout=900)


@pytest.mark.slow
def test_arms_over_seeds_run_skip_report_failures_and_get_intervals_and_paired_tests(tmp_path, tiny_hf_dir):
  """2 arms x 2 seeds of the tiny config and a broken arm: runs ARM/seedN, the broken one reported without stopping
  the others, per-example verdicts kept by training, summary.csv with each metric's interval and the paired
  difference to the control, the arm changing two keys named; run again, finished runs are skipped."""
  # The arms differ in data only, so every run's steps compile to the same programs (one compilation, cached).
  runs = ('{"broken": {"data.validation": "no/such/file.jsonl"}, "r2": {}, '
          '"r4": {"tasks.phrasings": "all", "data.augment": ["case"]}}')
  path = _tiny(tmp_path, tiny_hf_dir, runs,
               'SEEDS = {"broken": (0,), "r2": (0, 1), "r4": (0, 1)}; CONTROL = "r2"; '
               'METRICS = ("tasks/all", "tasks/seen", "eval_loss"); SCATTER = ("eval_loss", "tasks/all"); '
               'COMMON.update({"eval.suites": ("tasks",), "eval.limit": 6, "eval.max_new_tokens": 4, '
               '"tasks.eval_phrasings": "one"})')
  done = _sweep(tmp_path, path, "--runs_dir", "out")
  assert done.returncode == 1, done.stdout + done.stderr
  assert "broken/seed0: FAILED in train (exit 1): itjax train: error:" in done.stdout, done.stdout
  assert "no/such/file.jsonl" in done.stdout and "1 of 5 run(s) failed" in done.stdout
  root = tmp_path / "out" / "exp"
  assert json.loads((root / "broken" / "seed0" / "sweep.json").read_text())["status"] == "failed"
  for arm in ("r2", "r4"):
    for seed in (0, 1):
      marker = json.loads((root / arm / f"seed{seed}" / "sweep.json").read_text())
      assert marker["status"] == "done" and marker["overrides"]["seed"] == seed
      assert json.loads((root / arm / f"seed{seed}" / "config.json").read_text())["seed"] == seed
      final = [json.loads(x) for x in (root / arm / f"seed{seed}" / "evals" / "2" / "tasks.jsonl").read_text()
               .splitlines()]
      assert len(final) == 4 and all(r["item"].startswith("task:") and "all" in r["scores"] for r in final)
  with open(root / "summary.csv") as f:
    rows = {r["arm"]: r for r in csv.DictReader(f)}
  assert set(rows) == {"broken", "r2", "r4", "(base)"}
  assert rows["r4"]["seeds"] == "0 1" and rows["broken"]["seeds"] == ""
  for column in ("tasks/all", "tasks/all_lo", "tasks/all_hi", "tasks/all_diff", "tasks/all_diff_lo",
                 "tasks/all_diff_hi", "tasks/all_p", "eval_loss_p"):
    assert rows["r4"][column] != "", column
  r4 = rows["r4"]
  assert float(r4["tasks/all_lo"]) <= float(r4["tasks/all"]) <= float(r4["tasks/all_hi"])
  assert float(r4["eval_loss_diff_lo"]) <= float(r4["eval_loss_diff"]) <= float(r4["eval_loss_diff_hi"])
  assert 0 < float(r4["tasks/all_p"]) <= 1 and rows["r2"]["tasks/all_diff"] == ""
  assert rows["r2"]["tasks.phrasings"] == "one" and rows["r4"]["tasks.phrasings"] == "all"
  with open(root / "runs.csv") as f:
    per_run = list(csv.DictReader(f))
  assert [(r["arm"], r["seed"], r["status"]) for r in per_run] == [
      ("broken", "0", "failed"), ("r2", "0", "done"), ("r4", "0", "done"), ("r2", "1", "done"), ("r4", "1", "done")]
  for r in per_run[1:]:  # each run's own final validation loss and step time
    lines = [json.loads(x) for x in (root / r["run"] / "metrics.jsonl").read_text().splitlines()]
    assert float(r["eval_loss"]) == pytest.approx([x["eval_loss"] for x in lines if "eval_loss" in x][-1], rel=1e-3)
    assert float(r["step_s"]) > 0 and float(r["cpu_min"]) > 0
  mean = sum(float(r["eval_loss"]) for r in per_run[2::2]) / 2
  assert float(r4["eval_loss"]) == pytest.approx(mean, rel=1e-3)
  md = (root / "summary.md").read_text()
  assert "r4: data.augment, tasks.phrasings" in md  # changes two keys: said
  assert "- eval_loss: seeds; intervals over seeds only" in md and "- tasks/all, tasks/seen: seeds and examples" in md
  assert (root / "summary.png").read_bytes()[:4] == (root / "summary_scatter.png").read_bytes()[:4] == b"\x89PNG"
  marker = json.loads((root / "r4" / "seed1" / "sweep.json").read_text())
  assert 0 < marker["cpu_s"] and (root / "_base").is_dir()  # CPU time; the base's answers kept for all runs
  assert marker["cores"] >= 1 and "CPU hours" in md and "Ran at commit" in md

  # The summary alone, from the runs on disk: the same figures (the bootstrap's draws are seeded).
  first = (root / "summary.csv").read_text()
  (root / "summary.csv").unlink()
  assert sweep.summarize(path, str(tmp_path / "out"), say=lambda line: None) == 0
  assert (root / "summary.csv").read_text() == first

  # Compared with the base before training (the same figures for every seed), then with r4: every other arm gets a
  # difference, the mean of the arm's minus the control's.
  for control in ("(base)", "r4"):
    assert sweep.summarize(path, str(tmp_path / "out"), say=lambda line: None, control=control) == 0
    with open(root / "summary.csv") as f:
      now = {r["arm"]: r for r in csv.DictReader(f)}
    theirs = float(now[control]["tasks/all"])
    for arm in {"r2", "r4"} - {control}:
      assert float(now[arm]["tasks/all_diff"]) == pytest.approx(float(now[arm]["tasks/all"]) - theirs, abs=1e-6)
      lo, hi = float(now[arm]["tasks/all_diff_lo"]), float(now[arm]["tasks/all_diff_hi"])
      assert lo <= float(now[arm]["tasks/all_diff"]) <= hi and 0 < float(now[arm]["tasks/all_p"]) <= 1
    assert f"Control arm: **{control}**" in (root / "summary.md").read_text()
  with pytest.raises(ValueError, match=r"--control 'r3' is not an arm of RUNS; its arms: broken, r2, r4 \(or "):
    sweep.summarize(path, str(tmp_path / "out"), control="r3")
  assert sweep.summarize(path, str(tmp_path / "out"), say=lambda line: None) == 0  # the file's control again

  # Again: the finished runs are skipped (their files untouched), the failed one is tried again.
  stamp = os.path.getmtime(root / "r4" / "seed0" / "metrics.jsonl")
  again = _sweep(tmp_path, path, "--runs_dir", "out", "--only", "broken,r4")
  assert again.returncode == 1
  assert "r4/seed0: finished before, skipped" in again.stdout and "r2/seed0" not in again.stdout
  assert "broken/seed0: started" in again.stdout
  assert os.path.getmtime(root / "r4" / "seed0" / "metrics.jsonl") == stamp


def test_dry_run_prints_runs_overrides_and_commands_and_runs_nothing(tmp_path):
  path = _tiny(tmp_path, "some/model", '{"r2": {"lora.rank": 2}, "r16": {"lora.rank": 16, "eval.suites": ["tasks"]}}',
               'EVAL = {"suites": "tasks", "limit": 8}')
  lines = []
  assert sweep.main(path, dry_run=True, only=None, launcher="local", parallel=1, runs_dir=str(tmp_path / "runs"),
                    tpu=None, zone=None, project=None, say=lines.append) == 0
  text = "\n".join(lines)
  assert "r2: lora.rank=2" in text and 'r16: lora.rank=16 eval.suites=("tasks",)' in text
  workdir = os.path.join(str(tmp_path / "runs"), "exp", "r16")
  assert f"--workdir {workdir} --config.model=some/model --config.steps=2" in text
  assert "'--config.eval.suites=(\"tasks\",)'" in text
  assert f"itjax eval --model {workdir} --out {workdir}/eval --suites=tasks --limit=8" in text
  assert not (tmp_path / "runs").exists()
  lines.clear()
  sweep.main(path, dry_run=True, only=["r16"], launcher="local", parallel=1, runs_dir="runs", tpu=None, zone=None,
             project=None, say=lines.append)
  assert "r16: " in "\n".join(lines) and "r2: " not in "\n".join(lines)


def test_a_variant_takes_its_names_in_place_of_the_files(tmp_path, capfd, monkeypatch):
  """FILE.py:VARIANT: VARIANTS[VARIANT]'s names replace the file's; its runs go to NAME_VARIANT; the TPU launcher
  passes the variant on to the slice; an unknown variant names the known ones."""
  monkeypatch.chdir(tmp_path)
  path = _tiny(tmp_path, "m", '{"a": {}, "b": {"lora.rank": 2}}',
               'SEEDS = (0, 1); VARIANTS = {"big": {"COMMON": {"steps": 7}, "SEEDS": (0,)}}')
  lines = []
  _main(path + ":big", say=lines.append)
  assert lines[0].startswith("sweep exp_big: 2 run(s)") and "a/seed0: seed=0" in lines
  assert "--config.steps=7" in lines[2] and not any("seed1" in line for line in lines)
  assert _main(path + ":big", launcher="tpu", tpu="s", zone="z", runs_dir="gs://b/runs") == 0
  assert "sweep exp.py:big --launcher local --runs_dir gs://b/runs" in capfd.readouterr().out
  with pytest.raises(UserError, match=r"no variant 'small'; its variants: big"):
    _main(path + ":small")


def test_overrides_parse_back_as_the_config_types():
  """What the sweep writes as --config.KEY=VALUE is what ml_collections reads back (tuples, bools, floats)."""
  overrides = {"eval.suites": ("tasks", "forgetting"), "keep_best": False, "learning_rate": 2e-3, "lora.rank": 16,
               "data.drop_types": "a,b", "eval.perturbations": ("case",)}
  script = ("import json, sys\nfrom absl import flags\nfrom ml_collections import config_flags\n"
            "config_flags.DEFINE_config_file('config', None, '', lock_config=True)\n"
            "flags.FLAGS(sys.argv)\nprint(flags.FLAGS.config.to_json())\n")
  done = subprocess.run([sys.executable, "-c", script, "--config", TINY] +
                        [f"--config.{k}={sweep.flag_value(v)}" for k, v in overrides.items()],
                        capture_output=True, text=True, check=True)
  got = json.loads(done.stdout)
  assert got["eval"]["suites"] == ["tasks", "forgetting"] and got["eval"]["perturbations"] == ["case"]
  assert got["keep_best"] is False and got["learning_rate"] == 2e-3 and got["lora"]["rank"] == 16
  assert got["data"]["drop_types"] == "a,b"


def _main(path, **kw):
  args = dict(dry_run=True, only=None, launcher="local", parallel=1, runs_dir="runs", tpu=None, zone=None,
              project=None, say=lambda line: None)
  return sweep.main(path, **{**args, **kw})


@pytest.mark.parametrize("body, message", [
    (f"CONFIG = {TINY!r}\n", "RUNS must be a non-empty dict"),
    (f"CONFIG = {TINY!r}\nRUNS = {{}}\n", "RUNS must be a non-empty dict"),
    (f"CONFIG = {TINY!r}\nRUNS = {{'a': {{'lora.rnk': 4}}}}\n",
     "run 'a': unknown config key 'lora.rnk': lora has no 'rnk' (did you mean 'lora.rank'?)"),
    (f"CONFIG = {TINY!r}\nRUNS = {{'a': {{'learnig_rate': 4}}}}\n",
     "unknown config key 'learnig_rate': the config has no 'learnig_rate' (did you mean 'learning_rate'?)"),
    (f"CONFIG = {TINY!r}\nRUNS = {{'a': {{'steps': 'many'}}}}\n", "config key 'steps': 'many' does not fit"),
    (f"CONFIG = {TINY!r}\nCOMMON = {{'lora.x': 1}}\nRUNS = {{'a': {{}}}}\n", "unknown config key 'lora.x'"),
    (f"CONFIG = {TINY!r}\nRUNS = {{'a/b': {{}}}}\n", "run name 'a/b'"),
    ("CONFIG = 'configs/nope.py'\nRUNS = {'a': {}}\n", "CONFIG 'configs/nope.py': no such config file"),
    ("RUNS = {'a': {}}\n", "CONFIG must name the base config"),
    (f"CONFIG = {TINY!r}\nRUNS = {{'a': {{}}, 'b': {{}}}}\nSEEDS = (0, 1)\nCONTROL = 'c'\n",
     "CONTROL 'c' is not an arm of RUNS; its arms: a, b"),
    (f"CONFIG = {TINY!r}\nRUNS = {{'a': {{'seed': 3}}}}\nSEEDS = (0, 1)\n", "run 'a' sets 'seed'"),
    (f"CONFIG = {TINY!r}\nRUNS = {{'a': {{}}}}\nSEEDS = (0, 0)\n", "SEEDS of 'a' must be distinct integers"),
    (f"CONFIG = {TINY!r}\nRUNS = {{'a': {{}}}}\nSCATTER = ('x', 'y', 'z')\n", "SCATTER must be a pair"),
])
def test_bad_experiment_files_name_the_file_and_what_is_wrong(tmp_path, body, message):
  path = _experiment(tmp_path, body)
  with pytest.raises(UserError) as e:
    _main(path)
  assert str(e.value).startswith(path) and message in str(e.value), str(e.value)


def test_bad_sweep_flags(tmp_path):
  path = _tiny(tmp_path, "m", '{"a": {}, "b": {}}')
  with pytest.raises(UserError, match=r"--launcher tpu needs the slice: --tpu NAME --zone ZONE"):
    _main(path, launcher="tpu")
  with pytest.raises(UserError, match=r"--launcher tpu needs the slice"):
    _main(path, launcher="tpu", tpu="slice")  # no zone
  with pytest.raises(UserError, match=r"--only: .* has no run 'c'; its runs: a, b"):
    _main(path, only=["a", "c"])
  with pytest.raises(UserError, match="no such experiment file"):
    _main(str(tmp_path / "missing.py"))


def test_cli_sweep_errors_are_one_line(tmp_path):
  path = _experiment(tmp_path, f"CONFIG = {TINY!r}\nRUNS = {{'a': {{'lora.rnk': 4}}}}\n")
  done = _sweep(tmp_path, path, "--dry_run")
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1].startswith(f"itjax sweep: error: {path}: run 'a': unknown config key")
  assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_tpu_launcher_dry_run_submits_the_sweep_to_every_worker(tmp_path, capfd, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = _tiny(tmp_path, "m", '{"a": {}, "b": {"lora.rank": 2}}')
  assert _main(path, launcher="tpu", tpu="my-slice", zone="us-west4-a", only=["b"], runs_dir="gs://bucket/runs") == 0
  out = capfd.readouterr().out
  ssh = [line for line in out.splitlines() if line.startswith("gcloud compute tpus tpu-vm ssh my-slice")]
  assert len(ssh) == 1 and "--worker=all --zone=us-west4-a" in ssh[0]
  assert ("sweep exp.py --launcher local --runs_dir gs://bucket/runs --only b" in ssh[0]), ssh[0]
  assert "logs/sweep-exp.worker$TPU_WORKER_ID.log" in ssh[0]
  outside = tmp_path / "elsewhere"
  outside.mkdir()
  monkeypatch.chdir(outside)
  with pytest.raises(UserError, match="must lie inside the repository"):
    _main(path, launcher="tpu", tpu="my-slice", zone="z")


def test_a_bucket_runs_dir_gets_markers_logs_evaluations_and_the_summary(tmp_path, monkeypatch):
  """runs_dir gs://...: the sweep's own files go to the bucket (etils.epath; the bucket is a local directory here),
  the evaluation is written locally and copied up. Training and evaluation are stand-ins that write what they would."""
  from etils.epath import testing
  bucket = tmp_path / "bucket"
  local = lambda path: os.fspath(path).replace("gs://", f"{bucket}/")
  redirect = lambda fn, path, *a, **k: fn(local(path), *a, **k)
  calls = []

  def fake_call(command, stdout):
    args = command[3:]
    calls.append(args[0])
    value = lambda flag: args[args.index(flag) + 1]
    if args[0] == "train":
      os.makedirs(local(value("--workdir")), exist_ok=True)
      with open(os.path.join(local(value("--workdir")), "metrics.jsonl"), "w") as f:
        f.write('{"step": 1, "loss": 2.0, "step_time": 9.0}\n{"step": 2, "loss": 1.0, "step_time": 0.5}\n'
                '{"step": 2, "eval_loss": 1.5}\n')
    else:
      assert not value("--out").startswith("gs://")  # itjax eval writes local files
      os.makedirs(value("--out"))
      with open(os.path.join(value("--out"), "results.json"), "w") as f:
        json.dump({"suites": {"tasks": {"model": {"seen": 30.0}, "base": {"seen": 0.0}}}}, f)
    stdout.write(f"{args[0]} ran\n")
    return 0, 1.5

  monkeypatch.setattr(sweep, "_call", fake_call)
  path = _tiny(tmp_path, "m", '{"a": {"lora.rank": 2}}', 'EVAL = {"suites": "tasks"}')
  names = ("exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove", "rename", "replace",
           "rmtree", "stat", "walk")
  with testing.mock_epath(**{n: redirect for n in names}):
    args = dict(dry_run=False, only=None, launcher="local", parallel=1, runs_dir="gs://b/runs", tpu=None, zone=None,
                project=None, say=lambda line: None)
    assert sweep.main(path, **args) == 0
    assert sweep.main(path, **args) == 0  # finished: skipped
  assert calls == ["train", "eval"]
  run = bucket / "b" / "runs" / "exp" / "a"
  assert json.loads((run / "sweep.json").read_text())["status"] == "done"
  assert json.loads((run / "sweep.json").read_text())["cpu_s"] == 3.0  # training's and evaluation's
  assert "$ itjax train" in (run / "sweep.log").read_text() and "eval ran" in (run / "sweep.log").read_text()
  assert (run / "eval" / "results.json").exists()
  with open(bucket / "b" / "runs" / "exp" / "summary.csv") as f:
    rows = {r["run"]: r for r in csv.DictReader(f)}
  assert rows["a"]["tasks/seen"] == "30" and rows["a"]["eval_loss"] == "1.5" and rows["a"]["step_s"] == "0.5"
  assert rows["(base)"]["tasks/seen"] == "0"


def test_runs_that_differ_only_in_seed_get_a_mean_and_a_95_percent_interval():
  from itjax.sweep import report
  from itjax.sweep.experiment import Experiment
  runs = {f"{name}_seed{s}": {**over, "seed": s} for name, over in (("a", {"lora.rank": 4}), ("b", {"lora.rank": 8}))
          for s in range(3)}
  runs["lone"] = {"lora.rank": 16}
  experiment = Experiment("x.py", "x", "configs/tiny_lora.py", {}, runs)
  values = {"a": [10.0, 12.0, 14.0], "b": [1.0, 1.0, 1.0]}
  rows = [{"run": run, "status": "done" if run != "b_seed2" else "failed", "overrides": over,
           "figures": {"m": values[run[0]][over["seed"]]} if "seed" in over else {"m": 99.0}}
          for run, over in runs.items()]
  groups = report.seed_groups(experiment, rows)
  assert sorted(groups) == ["a", "b"] and len(groups["b"]) == 2  # the failed seed is left out
  mean, half = report.mean_interval([10.0, 12.0, 14.0])
  assert mean == 12.0 and half == pytest.approx(4.303 * 2.0 / 3 ** 0.5)
  assert report.mean_interval([5.0]) is None
  lines = report._seed_table(experiment, rows, {"m": 7.0}, ("m",))
  assert "| a | 3 | 12 ± 4.97 |" in lines and "| b | 2 | 1 ± 0 |" in lines and "| (base) | | 7 |" in lines


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(os.path.join(ROOT, "experiments"))
                                        if n.endswith(".py") and "\nVARIANTS = {" in open(
                                            os.path.join(ROOT, "experiments", n)).read()))
def test_pod_variants_of_the_experiments_print_their_slice_commands(name, capfd, monkeypatch):
  """Each experiment's pod-scale variant is read, checked against its config and submitted (dry run) to a slice."""
  monkeypatch.chdir(ROOT)
  path = os.path.join("experiments", name)
  lines = []
  assert _main(f"{path}:pod", launcher="tpu", tpu="s", zone="z", runs_dir="gs://b/runs", say=lines.append) == 0
  stem = name[:-3]
  assert lines[0].startswith(f"sweep {stem}_pod: ") and "llama31_8b_lora.py:tpu" in lines[0]
  assert all(f"--workdir gs://b/runs/{stem}_pod/" in line for line in lines if line.strip().startswith("itjax train"))
  assert f"sweep {path}:pod --launcher local --runs_dir gs://b/runs" in capfd.readouterr().out
