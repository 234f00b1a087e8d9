"""A suite defined outside itjax (here) and registered runs everywhere the built-in ones do: `itjax eval`, the live
evaluator, and a training run; the registry's names and errors; suite information without JAX."""

import json
import os
import subprocess
import sys

import pytest

from itjax.evals import registry
from itjax.evals.subject import Settings, Subject, SuiteOutput
from itjax.evals.suite import Sources, Suite
from conftest import itjax_in_process, live_lora_evaluator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ("Say hello.", "Name a colour.", "Count to three.", "What is 2 + 2?", "Name a fruit.", "Say goodbye.")


class NonEmpty(Suite):
  """The toy suite: the share of prompts answered with some text."""
  name, unit = "toy", "answers (%)"

  def read(self, sources: Sources) -> list[dict]:
    return [{"prompt": p} for p in PROMPTS[:sources.limit or len(PROMPTS)]]

  def answer(self, subject: Subject, records: list[dict], settings: Settings) -> SuiteOutput:
    responses, tokens = subject.respond([[{"role": "user", "content": r["prompt"]}] for r in records], settings,
                                        "toy")
    rows = [{**r, "response": text, "tokens": n} for r, text, n in zip(records, responses, tokens)]
    share = 100.0 * sum(bool(text.strip()) for text in responses) / len(rows)
    return SuiteOutput({"non_empty": share, "n_prompts": float(len(rows))}, rows, {"non-empty": share})


registry.register(NonEmpty())


def test_eval_runs_a_registered_suite_into_the_report(tiny_hf_dir, tmp_path):
  """`itjax eval --suites toy` (the command, in this process), with the model as its own base: the toy metrics are
  in results.json and report.md, its rows and plot beside them."""
  out = tmp_path / "eval"
  ran = itjax_in_process("eval", "--model", tiny_hf_dir, "--base", tiny_hf_dir, "--suites", "toy", "--out", str(out),
                         "--limit", "3", "--max_new_tokens", "4", "--batch_size", "4")
  assert ran.returncode == 0, ran.stderr[-3000:]
  toy = json.loads((out / "results.json").read_text())["suites"]["toy"]
  assert toy["model"]["n_prompts"] == toy["base"]["n_prompts"] == 3.0
  assert 0.0 <= toy["model"]["non_empty"] <= 100.0 and toy["delta"]["non_empty"] == 0.0
  report = (out / "report.md").read_text()
  assert "## toy" in report and "| non_empty |" in report
  rows = [json.loads(line) for line in (out / "toy.jsonl").read_text().splitlines()]
  assert [r["subject"] for r in rows] == ["model"] * 3 + ["base"] * 3
  assert [r["prompt"] for r in rows[:3]] == list(PROMPTS[:3]) and all("response" in r for r in rows)
  assert os.path.getsize(out / "toy.png") > 0


def test_the_live_evaluator_runs_a_registered_suite(tiny_hf_dir):
  """config.eval.suites = ('toy',) on live LoRA params: the toy output, eval/toy/METRIC lines to write."""
  from itjax.evals.live import metric_lines
  from itjax.interop.loading import load_model
  loaded = load_model(tiny_hf_dir)
  evaluator, trainable = live_lora_evaluator(loaded, suites=("toy",), limit=2, max_new_tokens=4)
  assert evaluator.suites
  outputs = evaluator(trainable, loaded.params)
  assert list(outputs) == ["toy"] and [r["prompt"] for r in outputs["toy"].rows] == list(PROMPTS[:2])
  lines = metric_lines(outputs)
  assert set(lines) == {"eval/toy/non_empty", "eval/toy/n_prompts"} and lines["eval/toy/n_prompts"] == 2.0
  nothing, _ = live_lora_evaluator(loaded, suites=())
  assert not nothing.suites


@pytest.mark.slow
def test_a_training_run_evaluates_a_registered_suite(tiny_hf_dir, tmp_path):
  """configs/tiny_lora.py with config.eval.suites = ('toy',): eval/toy lines before the first step and after the
  last, in metrics.jsonl and in the run's summary."""
  from itjax.training.loop import train
  from test_train import load_config
  config = load_config(model=tiny_hf_dir, **{"eval.suites": ("toy",), "eval.limit": 2, "eval.max_new_tokens": 4})
  workdir = str(tmp_path / "w")
  summary = train(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [r for r in map(json.loads, f) if any(k.startswith("eval/toy/") for k in r)]
  assert [r["step"] for r in lines] == [0, config.steps]
  assert all(r["eval/toy/n_prompts"] == 2.0 and 0.0 <= r["eval/toy/non_empty"] <= 100.0 for r in lines)
  assert sorted(summary["evals"]) == [0, config.steps] and "toy" in summary["evals"][config.steps]


def test_the_registry_knows_its_suites_and_names_the_unknown():
  assert registry.names()[:len(registry.BUILTIN)] == registry.BUILTIN and registry.names()[-1] == "toy"
  assert "latency" not in registry.names(live=True) and "toy" in registry.names(live=True)
  assert registry.get("toy").unit == "answers (%)"
  with pytest.raises(ValueError, match=r"unknown suite 'mmlu'; known: ifeval, tasks, .*, toy"):
    registry.get("mmlu")
  with pytest.raises(ValueError, match="suite 'toy' is already registered"):
    registry.register(NonEmpty())
  registry.register(registry.get("toy"))  # the same suite again: nothing changes

  class Bad(NonEmpty):
    name = "toy/2"

  with pytest.raises(ValueError, match="a suite's name is letters, digits"):
    registry.register(Bad())


def test_config_validation_takes_a_registered_suite_and_refuses_an_unknown_one():
  from itjax.training.config import validate
  from test_train import load_config
  c = load_config(model="demo", **{"eval.suites": ("toy", "tasks")})
  validate(c)
  c.eval.suites = ("latency",)  # itjax eval only
  with pytest.raises(ValueError, match=r"config.eval.suites may hold ifeval, tasks, forgetting, rigidity, "
                                       r"hallucination, judge, toy, got \('latency',\)"):
    validate(c)


def test_suite_information_reads_without_jax():
  """The registry, every built-in suite module and config validation import no JAX (the sweep reads them)."""
  code = ("import sys\n"
          "from itjax.evals import registry\n"
          "units = [registry.get(name).unit for name in registry.names()]\n"
          "from itjax.training.config import from_file, validate\n"
          "c = from_file('configs/smollm2_135m_lora.py', ''); c.model = 'demo'; validate(c)\n"
          "print(len(units), sorted(c.eval.suites), [m for m in ('jax', 'flax') if m in sys.modules])\n")
  ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert ran.returncode == 0, ran.stderr[-2000:]
  assert ran.stdout.strip() == "7 ['forgetting', 'judge', 'tasks'] []"
