"""The forgetting suite: degenerate-text rules on hand-made cases, perplexity and bits per byte against
transformers, KL of a model against itself, retention arithmetic, probes and text files."""

import math
import os

import numpy as np
import pytest

from itjax.evals import degenerate, forgetting, paired
from itjax.evals.subject import Settings, Subject
from conftest import assert_verdicts_reproduce

FAST = Settings(max_new_tokens=8, batch_size=4, limit=3, progress=False)
PROSE = ("It was a bright cold day in April, and the clocks were striking thirteen. The hallway smelt of boiled "
         "cabbage and old rag mats. At one end of it a coloured poster, too large for indoor display, had been "
         "tacked to the wall.")


@pytest.mark.parametrize("text, expected", [
    ('"' * 200, True),  # one mark repeated to the token limit
    ("beads of gold / golden apples / " + "cherries / " * 30, True),
    ("a a a a a a a a a a a a a a a a a a a a", True),
    ("The answer is 42. " * 12, True),
    ("I think so. " + "Let me explain why this matters. " * 6, True),
    (PROSE, False),
    ("Paris.", False),  # short answers are never degenerate
    ("yes yes yes yes", False),  # too short to judge
    ("* apple\n* banana\n* cherry\n* dragon\n* eagle\n* forest\n* garden\n* harbor\n* island", False),
    ("1. apple\n2. banana\n3. cherry\n4. dragon\n5. eagle\n6. forest\n7. garden", False),
    ('{"items": [12, 45, 78, 90, 102, 340, 512, 999, 1000]}', False),
    ("Autumn leaves drift down,\nred and gold upon the ground,\nwhispering goodbye.\nThe wind carries them away "
     "to sleep beneath the snow until spring returns.", False),
])
def test_degenerate_on_hand_made_cases(text, expected):
  assert degenerate.is_degenerate(text) is expected


def test_degenerate_compression_is_relative_to_the_reference():
  """A text far more compressible than the base's answers is degenerate even when no n-gram covers half of it."""
  looping = " ".join(f"Step {i}: add the flour, stir the pot, taste the soup and wait." for i in range(12))
  assert degenerate.repeat_coverage(looping) < degenerate.COVERAGE
  ratio = degenerate.compression_ratio(looping)
  assert degenerate.is_degenerate(looping, reference=ratio / 2.5)
  assert not degenerate.is_degenerate(looping, reference=ratio)


def test_repeat_coverage_counts_non_overlapping_occurrences():
  assert degenerate.repeat_coverage("x y x y x y x y") == 1.0
  assert degenerate.repeat_coverage("p q r s t u v w x y z a b c x y") == pytest.approx(4 / 16)


@pytest.mark.parametrize("response, answer, expected", [
    ("The answer is 1,250.", 1250, True),
    ("12500", 1250, False),
    ("It comes to 2012-03-05.", "2012-03-05", True),
    ("2012-03-06", "2012-03-05", False),
    ("Acronym: ABC", "ABC", True),
    ("abcd", "ABC", False),
    ("* cherry\n* banana\n* apple", ["cherry", "banana", "apple"], True),
    ("cherry, apple, banana", ["cherry", "banana", "apple"], False),
    ("1. cherry 2. banana 3. apple", ["cherry", "banana", "apple"], True),
])
def test_a_probe_answer_is_stated(response, answer, expected):
  assert forgetting.states_answer(response, answer) is expected


def test_generated_probes_answer_themselves_and_are_seeded():
  probes = forgetting.make_probes(24, 0)
  assert {p["op"] for p in probes} == set(forgetting.PROBE_KINDS)
  assert probes == forgetting.make_probes(24, 0) and probes != forgetting.make_probes(24, 1)
  many = [p["prompt"] for p in forgetting.make_probes(192, 0)]  # no probe counted twice
  assert len(set(many)) == len(many)
  for p in probes:
    shown = p["answer"] if not isinstance(p["answer"], list) else " ".join(map(str, p["answer"]))
    assert forgetting.states_answer(f"Sure: {shown}.", p["answer"]), p
    assert not forgetting.states_answer(p["prompt"], p["answer"]), p  # echoing the question is not answering it


def test_probes_carry_none_of_the_tasks_format_constraints():
  """A probe asks what the model knows; a task's format sentence in it ("Reply with only the answer." once was)
  would score whether the tuned model obeys the constraint it was trained on."""
  from itjax.data import phrasings
  wordings = [w for table in (phrasings._PHRASINGS, phrasings._DEFAULT_LINES) for ws in table.values() for w in ws]
  stems = {w.split("{")[0].strip().lower() for w in wordings}
  for p in forgetting.make_probes(forgetting.N_PROBES, 0):
    assert not [s for s in stems if s in p["prompt"].lower()], p["prompt"]


def test_probes_file_errors_name_the_line(tmp_path):
  path = tmp_path / "probes.jsonl"
  path.write_text('{"prompt": "What is 2 + 2?", "answer": 4}\n{"prompt": "Capital of Peru?"}\n')
  with pytest.raises(ValueError, match=r"probes.jsonl:2: missing 'answer'"):
    forgetting.read_probes(str(path))
  path.write_text('{"prompt": "What is 2 + 2?", "answer": true}\n')
  with pytest.raises(ValueError, match=r"probes.jsonl:1: 'answer' must be"):
    forgetting.read_probes(str(path))
  path.write_text('{"prompt": "What is 2 + 2?", "answer": 4}\n{"prompt": "Capital of Peru?", "answer": "Lima"}\n')
  assert [p["answer"] for p in forgetting.read_probes(str(path))] == [4, "Lima"]


def test_text_file_errors_and_cut(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n \n")
  with pytest.raises(ValueError, match=r"--text .*empty.txt: the text is empty"):
    forgetting.read_text(str(empty))
  with pytest.raises(FileNotFoundError, match="--text"):
    forgetting.read_text(str(tmp_path / "missing.txt"))
  text = tmp_path / "t.txt"
  text.write_text("first line é\nsecond line\n\nthird paragraph\n", encoding="utf-8")
  assert forgetting.read_text(str(text), max_bytes=30) == "first line é\nsecond line"


@pytest.fixture(scope="module")
def tiny(tiny_hf_dir):
  from itjax.interop.loading import load_model
  loaded = load_model(tiny_hf_dir)
  return Subject("model", loaded.config, loaded.params, loaded.tokenizer)


def test_text_windows_predict_every_token_once(tiny):
  windows, n = forgetting.text_windows(tiny.tokenizer, PROSE * 3, window=32)
  ids = tiny.tokenizer.encode(PROSE * 3, add_bos=False)
  assert n == len(ids) and sum(len(w) - 1 for w in windows) == n
  assert all(a[-1] == b[0] for a, b in zip(windows, windows[1:]))  # each window starts where the last ended
  assert [t for w in windows for t in w[1:]] == ids


def test_perplexity_and_bits_per_byte_match_transformers(tiny, tiny_hf_dir):
  """exp(mean NLL) from transformers' logits of the same windows; bits per byte over the UTF-8 bytes."""
  import torch
  import transformers
  text = PROSE + "\n\nNaïve café — déjà vu. " + PROSE  # multi-byte characters: bytes != characters
  ours = forgetting.text_metrics(tiny, text, window=64)
  reference = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, torch_dtype=torch.float32).eval()
  windows, n = forgetting.text_windows(tiny.tokenizer, text, window=64)
  total = 0.0
  with torch.no_grad():
    for w in windows:
      logits = reference(torch.tensor([w])).logits[0, :-1].double()
      total -= torch.log_softmax(logits, -1)[torch.arange(len(w) - 1), torch.tensor(w[1:])].sum().item()
  assert ours["text_tokens"] == n
  assert ours["perplexity"] == pytest.approx(math.exp(total / n), rel=1e-4)
  assert ours["text_bytes"] == len(text.encode("utf-8")) > len(text)
  assert ours["bits_per_byte"] == pytest.approx(total / math.log(2) / len(text.encode("utf-8")), rel=1e-4)


SAYS = Settings(max_new_tokens=8, batch_size=4, limit=4, progress=False)


def probes_it_says(subject: Subject, n: int) -> list[dict]:
  """Probes whose answer is the first word the subject says to them (those it says a word to)."""
  prompts = [p["prompt"] for p in forgetting.make_probes(n, 0)]
  said, _ = subject.respond([[{"role": "user", "content": p}] for p in prompts], SAYS, "probe")
  probes = [{"prompt": p, "answer": forgetting._words(s)[0], "op": "self"} for p, s in zip(prompts, said)
            if forgetting._words(s)]
  assert probes, "the tiny model said no word at all"
  return probes


def test_a_model_against_itself_has_zero_kl_and_full_retention(tiny):
  """Probes whose answers are what the model says: the base gets them right, and so does the same model."""
  probes = probes_it_says(tiny, 4)
  same = Subject("base", tiny.config, tiny.params, tiny.tokenizer)
  out = forgetting.evaluate(tiny, same, [{"messages": [{"role": "user", "content": "Sort: b a"}]}], SAYS, PROSE,
                            probes)
  m = out["model"].metrics
  assert abs(m["kl_general"]) < 1e-6 and abs(m["kl_tasks"]) < 1e-6
  assert m["retention"] == 100.0 and m["base_correct"] == m["model_correct"] == 100.0
  assert "gained" not in m  # the base got every probe right: nothing to gain
  assert m["perplexity"] == out["base"].metrics["perplexity"]
  assert out["model"].note is None
  assert_verdicts_reproduce(forgetting.Forgetting(), out["model"], {"retention", "kl_general", "model_correct"})


def test_gained_counts_the_probes_the_base_got_wrong(tiny):
  """Probes whose answers are what the model says, and as many that no model says: against itself the model keeps
  all it knew and gains nothing; against a base that says something else it gains every probe the base missed."""
  import jax
  right = probes_it_says(tiny, 6)
  probes = right + [{"prompt": p["prompt"] + " Say it twice.", "answer": "zzqx", "op": "never"} for p in right]
  m = forgetting.evaluate(tiny, tiny, None, SAYS, PROSE, probes)["model"].metrics
  assert (m["retention"], m["gained"], m["base_correct"], m["model_correct"]) == (100.0, 0.0, 50.0, 50.0)
  assert (m["lost_probes"], m["gained_probes"], m["net_loss_p"]) == (0.0, 0.0, 1.0)
  other = jax.tree.map(lambda x: x + 0.5 * np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype),
                       tiny.params)
  out = forgetting.evaluate(tiny, Subject("base", tiny.config, other, tiny.tokenizer), None, SAYS, PROSE, probes)
  m = out["model"].metrics
  assert m["base_correct"] < 50.0, "the perturbed base still says what the model says"
  assert m["gained"] == pytest.approx(100.0 * (len(right) - m["base_correct"] / 100 * len(probes)) / (
      len(probes) - m["base_correct"] / 100 * len(probes)))
  assert m.get("retention", 100.0) == 100.0 and m["model_correct"] == 50.0  # undefined when the base got none
  from itjax.training.metrics import is_percent  # loss.png's percent axis takes exactly the percentages
  on_axis = {k for k in m if is_percent(f"eval/forgetting/{k}")}
  assert on_axis == {"retention", "gained", "base_correct", "model_correct", "degenerate_rate",
                     "non_answer_rate"} & set(m)
  assert "non_answer_rate" in on_axis and not {"newly_non_answer", "non_answer_change_p"} & on_axis
  assert {"gained", "degenerate_rate"} <= on_axis and all(0 <= m[k] <= 100 for k in on_axis)
  assert m["lost_probes"] == 0 and m["gained_probes"] == len(right) - m["base_correct"] / 100 * len(probes)
  assert_verdicts_reproduce(forgetting.Forgetting(), out["model"], {
      "gained", "model_correct", "kl_general", "non_answer_rate", "degenerate_rate"})
  probe = next(r for r in out["model"].rows if r["kind"] == "probe" and not r["base_correct"] and r["correct"])
  assert probe["scores"] == {"model_correct": 100.0, "gained": 100.0}  # a probe gained, and said so


def test_sign_test_of_lost_against_gained():
  """McNemar's exact test: as many lost as gained is no evidence; 10 lost and none gained is (2 / 2**10)."""
  assert paired.sign_test_p(0, 0) == 1.0 and paired.sign_test_p(6, 7) == 1.0
  assert paired.sign_test_p(10, 0) == pytest.approx(2 / 2 ** 10) == paired.sign_test_p(0, 10)
  assert paired.sign_test_p(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 2 ** 10)  # P(X <= 2), X ~ Bin(10, 1/2)


def test_without_a_reference_forgetting_says_what_it_leaves_out(tiny):
  out = forgetting.evaluate(tiny, None, None, FAST, PROSE)
  assert set(out) == {"model"}
  assert {"perplexity", "bits_per_byte", "degenerate_rate", "mean_length"} <= set(out["model"].metrics)
  assert not {"kl_general", "retention"} & set(out["model"].metrics)
  assert "no reference" in out["model"].note


def test_kl_is_positive_for_different_params(tiny):
  import jax
  noisy = jax.tree.map(lambda x: x + 0.05 * np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype),
                       tiny.params)
  other = Subject("model", tiny.config, noisy, tiny.tokenizer)
  out = forgetting.evaluate(other, tiny, None, FAST, PROSE, probes=forgetting.make_probes(2, 0))
  assert out["model"].metrics["kl_general"] > 1e-4


def test_a_scoring_batch_holds_the_next_power_of_two_rows_its_sequences_need():
  """Teacher-forced scoring pads a batch to TOKENS_PER_BATCH tokens only when it has the sequences to fill them: 6
  task answers scored in 25 rows cost 4 times what they need."""
  from itjax.evals import scoring
  shapes = lambda sequences: [(len(picked), t.shape) for picked, t, _, _ in  # noqa: E731
                               scoring._batches(sequences, [1] * len(sequences), 0)]
  assert shapes([[2] * 100] * 3) == [(3, (4, 128))]  # 128 tokens: up to 32 rows
  assert shapes([[1] * 10] * 30) == [(30, (32, 16))]
  assert shapes([[2] * 100] * 33) == [(32, (32, 128)), (1, (1, 128))]


def test_a_model_that_is_its_base_takes_the_base_answers_without_generating(tiny, monkeypatch):
  """Before the first step the adapters are zero: the model's answers are the base's, generated once, its KL to
  the base is 0 without running either model again, and every figure is what answering twice gives."""
  import dataclasses

  class Silent(Subject):
    def generate(self, *args, **kwargs):
      raise AssertionError("the model generated although it is its base")

  tasks = [{"messages": [{"role": "user", "content": "Sort: b a"}]}]
  probes = forgetting.make_probes(3, 0)
  base = Subject("base", tiny.config, tiny.params, tiny.tokenizer)
  twice = forgetting.evaluate(tiny, base, tasks, FAST, PROSE, probes)
  silent = Silent(**{f.name: getattr(tiny, f.name) for f in dataclasses.fields(Subject) if f.init})
  from itjax.evals import scoring
  monkeypatch.setattr(scoring, "kl", lambda *a, **k: pytest.fail("KL computed for a model that is its base"))
  once = forgetting.evaluate(silent, base, tasks, FAST, PROSE, probes, model_is_base=True)
  assert once["model"].metrics["kl_general"] == once["model"].metrics["kl_tasks"] == 0.0
  assert once["model"].rows == twice["model"].rows and once["base"].rows == twice["base"].rows
  assert once["model"].metrics == pytest.approx(twice["model"].metrics, abs=1e-6)


def test_adapters_count_as_zero_only_when_every_lora_b_is_and_nothing_else_trains():
  import jax.numpy as jnp
  from itjax.evals.live import _adapters_are_zero
  a, b = jnp.ones((4, 2)), jnp.zeros((2, 4))
  assert _adapters_are_zero({"q": {"lora_a": a, "lora_b": b}, "k": {"lora_a": a, "lora_b": b}})
  assert not _adapters_are_zero({"q": {"lora_a": a, "lora_b": b}, "k": {"lora_a": a, "lora_b": b.at[1, 3].set(1e-9)}})
  assert not _adapters_are_zero({"q": {"lora_a": a, "lora_b": b}, "norm": {"scale": jnp.ones(4)}})
  assert not _adapters_are_zero({})


def test_runs_of_one_base_answer_with_it_once(tiny, tmp_path, monkeypatch):
  """config.eval.base_cache: a second run of the same base evaluates before its first step without generating or
  judging, to the same figures and verdicts; after training only the model answers (the base's answers and their
  relevance are read back)."""
  import jax
  from itjax.data.tasks import write_splits
  from conftest import live_lora_evaluator
  write_splits(str(tmp_path / "tasks"), 20, 0)
  (tmp_path / "prose.txt").write_text(PROSE)
  keys = dict(suites=("tasks", "forgetting", "judge"), limit=2, subset=2, n_probes=3, n_general=3,
              max_new_tokens=4, text=str(tmp_path / "prose.txt"))
  cache = str(tmp_path / "base" / "answers.jsonl")
  asked = []
  real = Subject._generate
  monkeypatch.setattr(Subject, "_generate", lambda self, prompts, *a, **k: asked.append(
      (self.label, len(prompts))) or real(self, prompts, *a, **k))
  first, trainable = live_lora_evaluator(tiny, str(tmp_path / "tasks"), cache, **keys)
  before = first(trainable, tiny.params, at_start=True)
  assert asked and os.path.exists(cache)
  asked.clear()
  from itjax.evals import judge
  judged = []
  monkeypatch.setattr(judge, "relevance", lambda *a, **k: judged.append(a) or pytest.fail("judged again"))
  second, _ = live_lora_evaluator(tiny, str(tmp_path / "tasks"), cache, **keys)
  again = second(trainable, tiny.params, at_start=True)
  assert asked == [] and judged == []  # the base answered, and was judged, in the first run
  for suite, output in before.items():
    assert again[suite].metrics == output.metrics, suite
    assert [r["scores"] for r in again[suite].rows] == [r["scores"] for r in output.rows]
  monkeypatch.undo()
  trained = jax.tree.map(lambda x: x + 0.05, trainable)
  monkeypatch.setattr(Subject, "_generate", lambda self, prompts, *a, **k: asked.append(
      (self.label, len(prompts))) or real(self, prompts, *a, **k))
  second(trained, tiny.params)
  assert asked and {label for label, _ in asked} == {"model"}


def test_full_fine_tuning_compares_with_the_base_as_loaded(tiny, tmp_path):
  """Without adapters the base is the params as loaded (`reference`): before the first step the model is its
  base (KL 0, nothing generated twice); with other params it has drifted from it."""
  import jax
  from itjax.evals.live import LiveEvaluator
  from itjax.training.config import base_config
  (tmp_path / "prose.txt").write_text(PROSE)
  eval_config = base_config().eval
  for key, value in dict(suites=("forgetting",), limit=2, subset=2, n_probes=3, n_general=3, max_new_tokens=4,
                         text=str(tmp_path / "prose.txt")).items():
    eval_config[key] = value
  evaluator = LiveEvaluator(eval_config, None, tiny.config, tiny.tokenizer, {}, None, False,
                            reference=tiny.params)
  assert set(evaluator.subjects) == {"model", "base"}
  start = evaluator(tiny.params, {}, at_start=True)["forgetting"].metrics
  assert start["kl_general"] == 0.0 and start.get("retention", 100.0) == 100.0
  moved = jax.tree.map(lambda x: x + 0.3 * np.random.default_rng(2).standard_normal(x.shape).astype(x.dtype),
                       tiny.params)
  assert evaluator(moved, {})["forgetting"].metrics["kl_general"] > 0
  no_base = LiveEvaluator(eval_config, None, tiny.config, tiny.tokenizer, {}, None, False)
  assert set(no_base.subjects) == {"model"}  # full fine-tuning without a reference: nothing to compare with
