"""The public API (itjax/__init__.py): objects in, objects out; user hooks fire at their cadence."""

import copy
import json
import os
import subprocess
import sys

import pytest

import itjax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = [{"instruction": f"Repeat the word {w} {n} times, separated by spaces.",
            "output": " ".join([w] * n)} for w in ("red", "blue", "green", "gold") for n in (2, 3)]


def tiny_config(tiny_hf_dir, **overrides):
  return itjax.config(os.path.join(ROOT, "configs", "tiny_lora.py"), **{"model": tiny_hf_dir, **overrides})


def test_import_itjax_loads_no_jax():
  code = "import sys, itjax; print('jax' in sys.modules, sorted(itjax.__all__))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
  assert out[0] == "False"
  assert {"load", "generate", "train", "evaluate", "export"} <= set(eval(out[1]))


def test_config_takes_bundled_names_files_and_nested_overrides(tiny_hf_dir):
  c = itjax.config("smollm2_135m_lora:smoke", steps=3, lora__rank=2, **{"eval.limit": 5})
  assert (c.steps, c.lora.rank, c.eval.limit, c.model) == (3, 2, 5, "demo")
  assert itjax.config().steps == 100  # the base
  for typo in ({"steps_typo": 1}, {"lora__rnak": 1}):
    with pytest.raises(ValueError, match="unknown key 'ste|unknown key 'lora.rnak'"):
      itjax.config(**typo)


@pytest.mark.slow
def test_a_user_hook_fires_at_its_cadence_and_sees_the_metrics(tiny_hf_dir, tmp_path):
  seen, each = [], []

  class Record(itjax.Hook):
    every = 2

    def on_step(self, trainer, step, metrics):
      seen.append((step, trainer.step, round(metrics["loss"], 6)))

  config = tiny_config(tiny_hf_dir, steps=5, eval_every=0, checkpoint_every=100)
  before = copy.deepcopy(config.to_dict())
  every_step = itjax.Every(1, lambda trainer, step, metrics: each.append(step))
  summary = itjax.train(config, str(tmp_path / "w"), hooks=[Record(), every_step])
  assert config.to_dict() == before  # the caller's config is not changed
  assert each == [1, 2, 3, 4, 5]
  with open(tmp_path / "w" / "metrics.jsonl") as f:
    logged = {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}
  assert seen == [(s, s, logged[s]) for s in (2, 4, 5)]  # every 2 steps and the last, with that step's loss
  assert summary["steps"] == 5


@pytest.mark.slow
def test_a_dataset_and_a_model_as_objects_train_and_evaluate(tiny_hf_dir, tmp_path):
  model = itjax.load(tiny_hf_dir)
  config = tiny_config(tiny_hf_dir, steps=2, eval_every=0, checkpoint_every=2, model="", **{"data.validation": "",
                                                                                              "tasks.n": 0})
  workdir = str(tmp_path / "w")
  summary = itjax.train(config, workdir, model=model, data=RECORDS)
  assert summary["steps"] == 2 and summary["total_params"] > summary["trainable_params"] > 0
  with open(os.path.join(workdir, "data", "train.jsonl")) as f:
    assert [json.loads(line) for line in f] == RECORDS  # kept, so a resume reads the same
  with pytest.raises(ValueError, match="other training records"):
    itjax.train(config, workdir, model=model, data=RECORDS[:2])
  tuned = itjax.load(workdir)
  answers = itjax.generate(tuned, ["Repeat the word red 2 times, separated by spaces."], max_new_tokens=4)
  assert len(answers) == 1 and isinstance(answers[0], str)
  from itjax.data.tasks import write_splits
  paths = write_splits(str(tmp_path / "tasks"), 20, 0, "uppercase")
  with open(paths["heldout"]) as f:
    tasks = [json.loads(line) for line in f][:2]
  results = itjax.evaluate(tuned, suites=["tasks"], base=model, out=str(tmp_path / "eval"), data=tasks,
                           max_new_tokens=4)
  scored = results["suites"]["tasks"]
  assert scored["model"]["n_heldout"] == scored["base"]["n_heldout"] == 2 and results["model"] == workdir
  assert os.path.exists(tmp_path / "eval" / "results.json") and os.path.exists(tmp_path / "eval" / "data.jsonl")
  with pytest.raises(ValueError, match=r"data.jsonl holds other records than the ones given: use another out"):
    itjax.evaluate(tuned, suites=["tasks"], out=str(tmp_path / "eval"), data=tasks[:1])  # the earlier ones stay


@pytest.mark.slow
def test_export_names_its_formats(tiny_hf_dir, tmp_path):
  with pytest.raises(ValueError, match="'hf' or 'peft'"):
    itjax.export(str(tmp_path), str(tmp_path / "out"), format="gguf")
