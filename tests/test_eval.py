"""`itjax eval` and in-training evaluation: tasks scoring, latency variants, reports, bad input, resume, parity of
a workdir with its export, and eval == generate on SmolLM2."""

import json
import os

import pytest

from itjax.data.tasks import DEFAULT_HOLDOUT, expand_holdout, make_splits, write_splits
from itjax.evals import tasks
from itjax.evals.run import Inputs, run
from itjax.evals.subject import Settings
from conftest import itjax_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = Settings(max_new_tokens=8, batch_size=4, limit=3, progress=False)


def tiny_config(model, **overrides):
  """configs/tiny_lora.py with the tasks suite on (3 tasks per split, 8 new tokens) and the overrides."""
  from test_train import load_config
  return load_config(model=model, **{"eval.suites": ("tasks",), "eval.limit": 3, "eval.max_new_tokens": 8,
                                     **overrides})


def eval_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if any(k.startswith("eval/") for k in r)]


@pytest.fixture(scope="module")
def trained(tiny_hf_dir, tmp_path_factory):
  """A tiny LoRA run of 6 steps with the tasks suite every 3 steps."""
  from itjax.training.loop import train
  workdir = str(tmp_path_factory.mktemp("evalrun") / "w")
  train(tiny_config(tiny_hf_dir, **{"eval.every": 3}), workdir)
  return workdir


def test_tasks_split_counts_equal_the_files(tmp_path):
  write_splits(str(tmp_path), 60, 0)
  lines = {s: sum(1 for _ in open(tmp_path / f)) for s, f in tasks.SPLIT_FILES.items()}
  records = tasks.load(str(tmp_path))
  assert {s: sum(r["split"] == s for r in records) for s in lines} == lines
  assert all(r["split"] == "heldout" for r in tasks.load(str(tmp_path / "heldout.jsonl")))
  assert all(r["split"] == "seen" for r in tasks.load(str(tmp_path / "validation.jsonl")))
  limited = tasks.load(str(tmp_path), limit=2)
  assert [r["split"] for r in limited] == ["seen", "seen", "heldout", "heldout"]


def test_tasks_scoring_of_known_verdicts():
  """The reference answers pass and wrong ones fail; accuracy per split and per type is exactly what they imply."""
  splits = make_splits(40, 3)
  records = [{**r, "split": "seen"} for r in splits["validation"]] + [
      {**r, "split": "heldout"} for r in splits["heldout"]]
  answers = [r["messages"][-1]["content"] for r in records]
  right = [i % 3 != 0 for i in range(len(records))]
  responses = [a if ok else "I cannot help with that." for a, ok in zip(answers, right)]
  out = tasks.score(records, responses, [len(r) for r in responses])
  for split in ("seen", "heldout"):
    idx = [i for i, r in enumerate(records) if r["split"] == split]
    assert out.metrics[split] == pytest.approx(100 * sum(right[i] for i in idx) / len(idx))
    assert out.metrics[f"n_{split}"] == len(idx)
  held_types = sorted({t for r in records for t in r["types"]} & expand_holdout(DEFAULT_HOLDOUT))
  assert len(held_types) >= 2
  for t in held_types:
    idx = [i for i, r in enumerate(records) if t in r["types"]]
    assert out.metrics[f"type/{t}"] == pytest.approx(100 * sum(right[i] for i in idx) / len(idx))
  assert [row["passed"] for row in out.rows] == right
  assert out.rows[0]["response"] == responses[0] and out.rows[0]["types"] == records[0]["types"]


@pytest.mark.slow
def test_in_training_evaluation_lines_and_resume(trained, tiny_hf_dir, tmp_path):
  """Eval lines at steps 0, 3 and 6 (every 3); 3 steps + resume + 3 gives the same lines as 6 straight."""
  from itjax.training.loop import train
  straight = eval_lines(trained)
  assert [r["step"] for r in straight] == [0, 3, 6]
  assert {"eval/tasks/seen", "eval/tasks/heldout", "eval/tasks/mean_response_tokens"} <= set(straight[0])
  parts = str(tmp_path / "parts")
  train(tiny_config(tiny_hf_dir, steps=3, **{"eval.every": 3}), parts)
  summary = train(tiny_config(tiny_hf_dir, **{"eval.every": 3}), parts)
  assert summary["resumed_from"] == 3 and sorted(summary["evals"]) == [6]
  assert eval_lines(parts) == straight
  assert os.path.getsize(os.path.join(parts, "loss.png")) > 0


@pytest.mark.slow
def test_latency_variants_and_report(trained, tmp_path):
  """Base, merged and unmerged: every figure for each, merged and unmerged greedy outputs token-identical."""
  out = str(tmp_path / "eval")
  results = run(trained, ["tasks", "latency"], out, settings=FAST)
  lat = results["suites"]["latency"]
  from itjax.evals.latency import METRICS
  for m in METRICS:
    assert lat["model"][m] > 0 and lat["base"][m] > 0 and lat["model"][f"unmerged/{m}"] > 0
    assert m in lat["delta"] and f"ratio/{m}" in lat["model"]
  assert lat["model"]["unmerged/identical_to_merged"] == 100.0
  for prefix in ("", "unmerged/"):  # the time ratio splits exactly into answer length and cost
    m = {k[len(prefix):]: v for k, v in lat["model"].items() if k.startswith(prefix)}
    assert m["ratio/s_per_prompt"] == pytest.approx(m["ratio/from_length"] * m["ratio/from_cost"], rel=1e-9)
    assert m["s_per_prompt"] == pytest.approx(m["prefill_s_per_prompt"] + m["decoded_per_prompt"]
                                              * m["decode_s_per_token"], rel=1e-9)
  assert lat["model"]["s_per_prompt_spread"] >= 0 and lat["base"]["s_per_prompt_spread"] >= 0
  assert results["base"] == tiny_hf_dir_of(trained)
  for name in ("results.json", "report.md", "tasks.jsonl", "tasks.png", "latency.jsonl", "latency.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  assert json.load(open(os.path.join(out, "results.json"))) == json.loads(json.dumps(results))
  rows = [json.loads(line) for line in open(os.path.join(out, "tasks.jsonl"))]
  assert {r["subject"] for r in rows} == {"model", "base"} and len(rows) == 2 * 6
  assert all({"prompt", "types", "verifier", "response", "passed"} <= set(r) for r in rows)
  assert "| seen |" in open(os.path.join(out, "report.md")).read()
  assert not [f for f in os.listdir(out) if ".tmp" in f]


def tiny_hf_dir_of(workdir):
  from itjax.interop.checkpoint import read_meta
  return read_meta(workdir)["base"]["path"]


def test_a_workdir_answers_as_its_hf_export(trained, tmp_path):
  from itjax.interop.export import export_hf
  exported = export_hf(trained, str(tmp_path / "hf"))
  a = run(trained, ["tasks"], str(tmp_path / "a"), base="none", settings=FAST)
  b = run(exported, ["tasks"], str(tmp_path / "b"), settings=FAST)
  rows = lambda d: [json.loads(line)["response"] for line in open(os.path.join(d, "tasks.jsonl"))]  # noqa: E731
  assert rows(tmp_path / "a") == rows(tmp_path / "b")
  assert a["base"] is None and "base" not in a["suites"]["tasks"]
  assert b["suites"]["tasks"]["model"] == a["suites"]["tasks"]["model"]


def test_scanned_unmerged_decoding_equals_unrolled_merged(trained):
  """What training evaluates on accelerators (scanned layers, adapters applied at run time) answers as the merged,
  unrolled model does."""
  from itjax.model import lora
  from itjax.interop.checkpoint import lora_spec
  from itjax.model.generate import Generator
  from itjax.interop.loading import load_trained
  base, params, meta = load_trained(trained)
  joined = lora.join(params, base.params)
  config = base.config.replace(lora=lora_spec(meta))
  merged_config, merged = lora.merge_adapters(config, joined)
  tok = base.tokenizer
  prompts = [tok.encode_chat([{"role": "user", "content": text}]) for text in ("Sort: b, a.", "Count to five.")]
  scanned = Generator(config, joined, tok.eos_ids, tok.pad_id, unroll=False).generate(prompts, 10)
  unrolled = Generator(merged_config, merged, tok.eos_ids, tok.pad_id).generate(prompts, 10)
  assert [o.tokens for o in scanned] == [o.tokens for o in unrolled]


def test_bad_input_names_the_flag_or_file(trained, tmp_path):
  with pytest.raises(ValueError, match=r"--suites: unknown suite 'mmlu'"):
    run(trained, ["tasks", "mmlu"], str(tmp_path / "o"))
  with pytest.raises(ValueError, match=r"--suites ifeval needs --data"):
    run(trained, ["ifeval"], str(tmp_path / "o"))
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  with pytest.raises(ValueError, match=f"{empty}: no records"):
    run(trained, ["ifeval"], str(tmp_path / "o"), data=str(empty))
  with pytest.raises(ValueError, match=f"{empty}: no task records"):
    run(trained, ["tasks"], str(tmp_path / "o"), data=str(empty))
  bare = tmp_path / "bare"
  (bare / "tasks").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=f"--model {bare}: a training workdir without checkpoints"):
    run(str(bare), ["tasks"], str(tmp_path / "o"))
  with pytest.raises(ValueError, match="--step needs a training workdir"):
    run(tiny_hf_dir_of(trained), ["tasks"], str(tmp_path / "o"), step=3)
  assert not os.path.exists(tmp_path / "o" / "results.json")


PROSE = "The river ran past the mill and under the old stone bridge. " * 6


@pytest.mark.slow
def test_forgetting_rigidity_and_hallucination_of_a_workdir(trained, tmp_path):
  """The tuned LoRA (learning rate 5e-3) moved away from its base: KL > 0 on general and task prompts; model, base
  and delta for every suite, from one run, with the base loaded once."""
  text = tmp_path / "prose.txt"
  text.write_text(PROSE)
  out = str(tmp_path / "eval")
  results = run(trained, ["forgetting", "rigidity", "hallucination"], out, settings=FAST,
                inputs=Inputs(text=str(text), perturbations=("case", "system")))
  f = results["suites"]["forgetting"]
  assert f["model"]["kl_general"] > 0 and f["model"]["kl_tasks"] > 0
  assert {"perplexity", "bits_per_byte", "degenerate_rate", "mean_length"} <= set(f["delta"])
  assert f["model"]["perplexity"] != f["base"]["perplexity"]
  r = results["suites"]["rigidity"]
  assert {"clean", "accuracy/case", "drop/system", "worst_drop", "spread"} <= set(r["model"]) & set(r["delta"])
  assert "accuracy/typos_2" not in r["model"]
  h = results["suites"]["hallucination"]
  assert {"answerable_accuracy", "abstention_rate", "fabrication_rate", "false_abstention_rate"} <= set(h["delta"])
  for name in ("forgetting", "rigidity", "hallucination"):
    assert os.path.getsize(os.path.join(out, f"{name}.jsonl")) > 0 and os.path.exists(os.path.join(out, f"{name}.png"))
  assert results["settings"]["perturbations"] == ["case", "system"]


@pytest.mark.slow
def test_a_model_against_itself_forgets_nothing(trained, tmp_path):
  text = tmp_path / "prose.txt"
  text.write_text(PROSE)
  src = tiny_hf_dir_of(trained)
  results = run(src, ["forgetting"], str(tmp_path / "o"), base=src, settings=FAST, inputs=Inputs(text=str(text)))
  f = results["suites"]["forgetting"]
  assert abs(f["model"]["kl_general"]) < 1e-6 and abs(f["model"]["kl_tasks"]) < 1e-6
  assert f["delta"]["perplexity"] == 0 and f["delta"]["degenerate_rate"] == 0
  alone = run(src, ["forgetting"], str(tmp_path / "p"), settings=FAST, inputs=Inputs(text=str(text)))
  assert "no reference" in alone["suites"]["forgetting"]["note"]
  assert "kl_general" not in alone["suites"]["forgetting"]["model"]
  assert "no reference" in open(tmp_path / "p" / "report.md").read()


@pytest.mark.slow
def test_forgetting_rigidity_and_hallucination_inside_training(tiny_hf_dir, tmp_path):
  """At step 0 the adapters are zero, so the tuned model is its base: KL 0; after the steps it is not. The base is
  the frozen params with the adapters off, answered once. The probes follow eval.seed, not the training seed, so runs
  of several seeds are scored on the same probes."""
  from itjax.evals import forgetting
  from itjax.training.loop import train
  text = tmp_path / "prose.txt"
  text.write_text(PROSE)
  workdir = str(tmp_path / "w")
  overrides = {"seed": 7, "eval.suites": ("forgetting", "rigidity", "hallucination"), "eval.subset": 2,
               "eval.n_probes": 50, "eval.n_general": 5, "eval.text": str(text),
               "eval.perturbations": ("case", "reworded")}
  summary = train(tiny_config(tiny_hf_dir, steps=3, **overrides), workdir)
  lines = {}
  for r in eval_lines(workdir):  # a line per suite
    lines.setdefault(r["step"], {}).update(r)
  assert sorted(lines) == [0, 3]
  assert abs(lines[0]["eval/forgetting/kl_general"]) < 1e-6 and lines[3]["eval/forgetting/kl_general"] > 0
  assert lines[0]["eval/forgetting/perplexity"] != lines[3]["eval/forgetting/perplexity"]
  for key in ("eval/rigidity/clean", "eval/rigidity/accuracy/reworded", "eval/hallucination/abstention_rate"):
    assert key in lines[0] and key in lines[3]
  rows = summary["evals"][3]["forgetting"].rows
  assert len([r for r in rows if r["kind"] == "general"]) == 5 and len([r for r in rows if r["kind"] == "probe"]) == 50
  asked = [r["prompt"] for r in rows if r["kind"] == "probe"]
  assert asked == [p["prompt"] for p in forgetting.make_probes(50, 0)] != [p["prompt"] for p in
                                                                             forgetting.make_probes(50, 7)]
  for step in (0, 3):  # each evaluation's examples with their verdicts, to compare runs item by item
    kept = [json.loads(x) for x in open(os.path.join(workdir, "evals", str(step), "forgetting.jsonl"))]
    assert len(kept) == 55 and all(r["item"].split(":")[0] in ("general", "probe") and r["scores"] for r in kept)
    assert os.path.exists(os.path.join(workdir, "evals", str(step), "rigidity.jsonl"))


def test_bad_forgetting_and_rigidity_input_names_the_file_or_flag(trained, tmp_path):
  empty, probes = tmp_path / "empty.txt", tmp_path / "probes.jsonl"
  empty.write_text("")
  prose = tmp_path / "prose.txt"  # a local text: the default one is a download
  prose.write_text("A short paragraph of plain prose for the perplexity part of the suite.\n")
  probes.write_text('{"prompt": "2 + 2?", "answer": 4}\n{"prompt": "3 + 3?"}\n')
  with pytest.raises(ValueError, match=f"--text {empty}: the text is empty"):
    run(trained, ["forgetting"], str(tmp_path / "o"), inputs=Inputs(text=str(empty)))
  with pytest.raises(ValueError, match=f"{probes}:2: missing 'answer'"):
    run(trained, ["forgetting"], str(tmp_path / "o"), inputs=Inputs(text=str(prose), probes=str(probes)))
  with pytest.raises(ValueError, match="--perturbations.*'typo'"):
    run(trained, ["rigidity"], str(tmp_path / "o"), inputs=Inputs(perturbations=("case", "typo")))
  assert not os.path.exists(tmp_path / "o" / "results.json")


def test_eval_command_line(tmp_path):
  """The command: an unknown suite exits 1 naming it; --responses scores without a model."""
  pytest.importorskip("if_verifiable")
  bad = itjax_in_process("eval", "--model", "x", "--suites", "tasks,nope", "--out", str(tmp_path / "o"))
  assert bad.returncode == 1 and "--suites: unknown suite 'nope'" in bad.stderr
  data, answers = tmp_path / "ifeval.jsonl", tmp_path / "responses.jsonl"
  data.write_text("\n".join(json.dumps(r) for r in [
      {"key": 1, "prompt": "Answer in lowercase only.", "instruction_id_list": ["change_case:english_lowercase"],
       "kwargs": [{}]},
      {"key": 2, "prompt": "Do not use commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}]))
  answers.write_text(json.dumps({"key": 1, "response": "all lowercase here"}) + "\n"
                     + json.dumps({"key": 2, "response": "one, two"}) + "\n")
  ok = itjax_in_process("eval", "--suites", "ifeval", "--data", str(data), "--responses", str(answers), "--out",
                        str(tmp_path / "r"), "--json")
  assert ok.returncode == 0, ok.stderr
  results = json.loads(ok.stdout)
  assert results["suites"]["ifeval"]["model"]["prompt_strict"] == 50.0
  assert results["suites"]["ifeval"]["model"]["strict/punctuation:no_comma"] == 0.0
  assert os.path.exists(tmp_path / "r" / "ifeval.png")


@pytest.mark.slow
def test_smollm2_eval_answers_as_generate_does(itjax_smollm2, tmp_path):
  """Greedy evaluation (16 refilling slots) gives the responses `itjax generate` gives (8 slots) on SmolLM2."""
  from itjax.evals.subject import Subject
  from itjax.model.generate import generate_texts
  m = itjax_smollm2
  write_splits(str(tmp_path / "tasks"), 20, 0)
  records = tasks.load(str(tmp_path / "tasks"), limit=5)
  subject = Subject("model", m.config, m.params, m.tokenizer)
  rows = tasks.evaluate(subject, records, Settings(max_new_tokens=40, batch_size=16, progress=False)).rows
  prompts = [m.tokenizer.encode_chat([{"role": "user", "content": r["prompt"]}]) for r in rows]
  texts = generate_texts(subject.generator, m.tokenizer, prompts, 40, batch_size=8, progress=False)
  assert texts == [r["response"] for r in rows]
  assert len({len(t) for t in texts}) > 1  # answers of different lengths: slots were refilled mid-decode


def test_an_interrupted_eval_leaves_no_half_written_files(trained, tmp_path, monkeypatch):
  """Ctrl-C (SIGTERM unwinds the same way) inside a suite or inside a write: results.json is absent or whole."""
  from itjax.io import atomic
  out = tmp_path / "o"
  run(trained, ["tasks"], str(out), settings=FAST)
  whole = (out / "results.json").read_text()

  def interrupted(f):
    f.write('{"model": ')
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    atomic.write_text(str(out / "results.json"), interrupted)
  assert (out / "results.json").read_text() == whole and not [p for p in os.listdir(out) if ".tmp" in p]

  def stop(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(tasks, "evaluate", stop)
  with pytest.raises(KeyboardInterrupt):
    run(trained, ["tasks"], str(tmp_path / "fresh"), settings=FAST)
  assert not os.path.exists(tmp_path / "fresh" / "results.json")


def test_latency_warms_every_timed_program_up_and_takes_the_fastest_round(monkeypatch):
  """The untimed pass runs the programs of the timed calls (same slots, cache length and prompt buckets); the
  figures come from the fastest round, the b16 ones from one round so that they add up."""
  from itjax.evals import latency
  from itjax.model.generate import Timing, bucket_length
  calls = []

  class Fake:
    label, generator = "x", type("G", (), {"timing": None})()

    def generate(self, prompts, settings, desc, batch_size=None, reuse=False):
      calls.append((desc, [len(p) for p in prompts], batch_size))
      slow = 2.0 if len([c for c in calls if c[0] == desc]) == 1 else 1.0  # the first timed round is slower
      self.generator.timing = Timing(prefill_s=0.5 * slow, decode_s=1.0 * slow, decode_tokens=10 * len(prompts),
                                     first_token_s=[0.1 * slow] * len(prompts))
      return [type("Out", (), {"tokens": [1] * 11})() for _ in prompts]

  prompts = [[1] * n for n in (3, 3, 20, 40, 90, *([5] * 20))]
  latency._warm_up(Fake(), prompts, None)
  warm = calls[-1]
  assert warm[2] == latency.BATCH and len(warm[1]) == latency.BATCH and max(warm[1]) == 90
  assert {bucket_length(n) for n in warm[1]} == {bucket_length(len(p)) for p in prompts}
  rounds = latency._Rounds()
  for _ in range(2):
    latency._timed_round(Fake(), prompts, None, rounds)
  f = latency._figures(rounds, len(prompts))
  assert f["s_per_prompt"] == pytest.approx(1.5 / len(prompts)) and f["ttft_s"] == pytest.approx(0.1)
  assert f["s_per_prompt_spread"] == pytest.approx(100.0)
  assert f["s_per_prompt"] == pytest.approx(f["prefill_s_per_prompt"] + f["decoded_per_prompt"]
                                            * f["decode_s_per_token"])


def test_chat_template_none_feeds_each_prompt_as_plain_text(trained, tmp_path, monkeypatch):
  """`itjax eval --chat_template none` (a base model without a template): every subject encodes a prompt as its text
  after BOS, with no template around it; a built-in name replaces the workdir's template the same way."""
  from itjax.evals import subject as subject_lib
  seen = []
  encode = subject_lib.Subject.encode

  def spy(self, chats):
    ids = encode(self, chats)
    seen.extend((self.label, self.template, c, i) for c, i in zip(chats, ids))
    return ids

  monkeypatch.setattr(subject_lib.Subject, "encode", spy)
  out = itjax_in_process("eval", "--model", trained, "--suites", "tasks", "--limit", "2", "--max_new_tokens", "4",
                         "--chat_template", "none", "--out", str(tmp_path / "plain"))
  assert out.returncode == 0, out.stderr
  from itjax.interop.loading import load_tokenizer
  tok = load_tokenizer(trained)
  assert {label for label, *_ in seen} == {"model", "base"} and len(seen) == 8
  for _, template, chat, ids in seen:
    assert template == "none" and [m["role"] for m in chat] == ["user"]
    assert ids == tok.encode(chat[0]["content"])  # BOS, then the text: no header, no end of turn
  seen.clear()
  assert itjax_in_process("eval", "--model", trained, "--suites", "tasks", "--limit", "2", "--max_new_tokens", "4",
                          "--chat_template", "chatml", "--out", str(tmp_path / "chatml")).returncode == 0
  assert all(ids == tok.encode_chat(chat, template="chatml") for _, _, chat, ids in seen)
