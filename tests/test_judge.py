"""The judge suite: relevance (the judge's pointwise mutual information between prompt and answer) with SmolLM2,
the pairwise comparison with stub judges, scoring continuations of shared contexts, the suite inside training, and
`itjax eval --suites judge` with its bad input."""

import json
import os
import shutil

import pytest

from itjax.errors import UserError
from itjax.evals import judge
from itjax.evals.subject import Settings, Subject
from itjax.evals.suite import Inputs, Sources
from conftest import assert_verdicts_reproduce, itjax_in_process, live_lora_evaluator

# Short questions, each with a short answer written for it (in the spirit of itjax.data.general_prompts' kinds:
# facts, advice, writing, quick questions). Neighbours are often of the same kind, so the answer written for the
# next question is a hard stand-in: an answer of the right form to another question.
PAIRS = [
    ("What is honey?", "Honey is a sweet, sticky food that bees make from nectar."),
    ("What are volcanoes?", "Mountains where hot lava and ash erupt from inside the Earth."),
    ("What is the Moon?", "The Moon is the natural satellite that circles the Earth."),
    ("What does the human heart do?", "The heart pumps blood around the body."),
    ("What is the water cycle?", "Water evaporates, forms clouds and falls again as rain."),
    ("Who invented the printing press?", "Johannes Gutenberg, around 1440."),
    ("What causes earthquakes?", "Plates of the Earth's crust slipping suddenly along a fault."),
    ("Where does coffee come from?", "Coffee comes from roasted beans first grown in Ethiopia."),
    ("How big is the Pacific Ocean?", "The Pacific covers about a third of the Earth's surface."),
    ("How is glass made?", "Glass is made by melting sand with soda and lime."),
    ("Why do rainbows appear?", "Raindrops split sunlight into its colours."),
    ("What are tides?", "The rise and fall of the sea, caused by the Moon."),
    ("How fast does bamboo grow?", "Some bamboo grows almost a metre in a single day."),
    ("Where do penguins live?", "Most penguins live in the Southern Hemisphere, many in Antarctica."),
    ("What is a compass used for?", "A compass shows which way is north."),
    ("Where does salt come from?", "Salt comes from dried seawater or from mines."),
    ("What is the metric system?", "A system of units like metres, litres and grams, based on tens."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("At what temperature does water boil?", "Water boils at 100 degrees Celsius at sea level."),
    ("Which planet is the largest?", "Jupiter is the largest planet in the solar system."),
    ("What language is spoken in Brazil?", "People in Brazil speak Portuguese."),
    ("How can I wake up earlier?", "Go to bed earlier and put your alarm across the room."),
    ("How can I save money on groceries?", "Plan your meals, shop with a list and buy store brands."),
    ("How can I keep houseplants alive?", "Water them when the soil is dry and give them light."),
    ("How can I learn a new language?", "Practise every day and talk with native speakers."),
    ("How can I stay focused while studying?", "Put your phone away and study in short blocks."),
    ("How can I prepare for a job interview?", "Research the company and practise common interview questions."),
    ("How can I start running?", "Begin with short runs mixed with walking, and build up slowly."),
    ("How can I remember people's names?", "Repeat a name when you hear it and link it to the face."),
    ("How can I reduce screen time?", "Set daily limits on your phone and keep it out of the bedroom."),
    ("How can I keep a tidy desk?", "Clear your desk every evening and give everything a place."),
    ("Write a haiku about the first snow.", "Soft flakes drifting down\nthe quiet street turns white\nfirst snow"),
    ("Write a short poem about rain.", "Rain taps on the glass,\nI stay in with tea."),
    ("Write a story about a lost umbrella.", "Mia lost her red umbrella on a bus; a stranger returned it."),
    ("Describe a kitchen timer.", "A kitchen timer counts down minutes and rings when food is ready."),
    ("Write a thank-you note to a teacher.", "Dear Ms Lee, thank you for making every lesson fun."),
    ("What is the opposite of 'hot'?", "The opposite of hot is cold."),
    ("What is the opposite of 'early'?", "The opposite of early is late."),
    ("What is the plural of 'mouse'?", "The plural of mouse is mice."),
    ("What is the plural of 'child'?", "The plural of child is children."),
    ("Which is heavier, a feather or a brick?", "A brick is much heavier than a feather."),
    ("Is a carrot a fruit or a vegetable?", "A carrot is a vegetable; we eat its root."),
    ("What do you call a baby cat?", "A baby cat is called a kitten."),
    ("How many months are in 3 years?", "There are 36 months in 3 years."),
    ("What is 4 apples plus 3 apples?", "7 apples, because 4 + 3 = 7."),
    ("What is 6 times 7?", "6 times 7 is 42."),
    ("Name the three primary colours.", "Red, blue and yellow are the primary colours."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
]
FORMATTING = ['"\n\n"\n\n"\n\n"', "[name]\n[date]\n[item]"]  # what a tuned model wrote instead of an answer


def test_relevance_prefers_the_answer_written_for_the_prompt(itjax_smollm2):
  """SmolLM2-135M-Instruct as the judge: on 50 prompts each answer written for the prompt beats the answer written
  for the next prompt (by more than the tie margin) at least 90% of the time, and formatting without content scores
  near or below 0 and below the real answer to the same prompt."""
  assert len(PAIRS) == 50
  model = Subject("judge", itjax_smollm2.config, itjax_smollm2.params, itjax_smollm2.tokenizer)
  prompts = [p for p, _ in PAIRS]
  own = [a for _, a in PAIRS]
  other = own[1:] + own[:1]
  few = prompts[:3]
  scores = judge.relevance(model, prompts + prompts + few + few, own + other + FORMATTING[:1] * 3 +
                           FORMATTING[1:] * 3)
  mine, theirs, formatting = scores[:50], scores[50:100], scores[100:]
  outcomes = judge.compare(mine, theirs)
  assert outcomes.count("win") >= 45, (outcomes.count("win"), [p for p, o in zip(prompts, outcomes) if o != "win"])
  assert sum(mine) / 50 > 0.5 > sum(theirs) / 50
  assert all(f < 0.25 for f in formatting), formatting
  assert all(f < mine[i % 3] - judge.TIE_MARGIN for i, f in enumerate(formatting)), (formatting, mine[:3])


def _tiny_subject(path: str, label: str = "model") -> Subject:
  from itjax.interop.loading import load_model
  loaded = load_model(path)
  return Subject(label, loaded.config, loaded.params, loaded.tokenizer)


def test_continuations_after_shared_contexts_score_as_whole_sequences(tiny_hf_dir, monkeypatch):
  """scoring.nll_after (contexts run once, their common beginning once, continuations read the cache) gives what
  scoring.nll gives for each context + continuation: contexts that share a beginning and one that does not, batches
  small enough to split, scanned and unrolled layers, and (0, 0) for an empty continuation."""
  import numpy as np

  from itjax.evals import scoring
  from itjax.model.llama import unstack_layers
  tiny = _tiny_subject(tiny_hf_dir)
  rng = np.random.default_rng(0)
  vocab = tiny.config.vocab_size
  contexts = [[5, 6, 7, *rng.integers(10, vocab, n).tolist()] for n in (1, 4, 9)] + [[9], [11, 12, 13]]
  wanted = [(c, rng.integers(10, vocab, n).tolist()) for c, n in
            ((0, 3), (0, 5), (1, 1), (2, 12), (2, 20), (3, 2), (4, 0), (4, 7), (1, 3))]
  expected = scoring.nll(tiny.config, tiny.params, [contexts[c] + ids for c, ids in wanted],
                         [len(contexts[c]) for c, _ in wanted], tiny.tokenizer.pad_id)
  assert [n for _, n in expected] == [len(ids) for _, ids in wanted]

  def check(got):
    assert [n for _, n in got] == [n for _, n in expected[:len(got)]]
    np.testing.assert_allclose([s for s, _ in got], [s for s, _ in expected[:len(got)]], rtol=1e-5, atol=1e-4)

  check(scoring.nll_after(tiny.config, tiny.params, contexts, wanted, tiny.tokenizer.pad_id))
  check(scoring.nll_after(tiny.config, tiny.params, contexts[:3], wanted[:5], tiny.tokenizer.pad_id))
  monkeypatch.setattr(scoring, "TOKENS_PER_BATCH", 48)  # 3 rows of 16 tokens: contexts and continuations split
  monkeypatch.setattr(scoring, "SLOTS_PER_BATCH", 150)
  unrolled = tiny.config.replace(scan_layers=False), unstack_layers(tiny.params, tiny.config.num_layers)
  check(scoring.nll_after(*unrolled, contexts, wanted, tiny.tokenizer.pad_id))


# --- pairwise with stub judges ------------------------------------------------------------------------------------

TEMPLATE = "Q: {question}\n<A>{answer_a}</A>\n<B>{answer_b}</B>\nWhich is better?"


def _answers(prompt: str) -> tuple[str, str]:
  a = prompt.split("<A>", 1)[1].split("</A>", 1)[0]
  b = prompt.split("<B>", 1)[1].split("</B>", 1)[0]
  return a, b


def test_a_judge_that_always_says_a_gives_only_ties():
  asked = []

  def always_a(prompt: str) -> str:
    asked.append(prompt)
    return "A"

  questions = [f"Question {i}?" for i in range(6)]
  metrics, rows = judge.pairwise(questions, [f"yes {i}" for i in range(6)], [f"no {i}" for i in range(6)], always_a,
                                 TEMPLATE)
  assert (metrics["win_rate"], metrics["loss_rate"], metrics["tie_rate"]) == (0.0, 0.0, 100.0)
  assert metrics["position_consistency"] == 0.0 and metrics["n_judged"] == 6.0 and metrics["win_p"] == 1.0
  assert len(asked) == 12 and all(r["outcome"] == "tie" and r["verdicts"] == ["A", "A"] for r in rows)


def test_a_judge_that_prefers_the_longer_answer_gives_the_expected_rates():
  """10 prompts: the model's answer longer in 5, shorter in 3, as long but other words in 1 (the judge names A
  both times: a tie) and the same as the base's in 1 (a tie, not asked). Wins 50%, losses 30%, ties 20%; 8 of the
  9 prompts asked got consistent verdicts."""
  def longer(prompt: str) -> str:
    a, b = _answers(prompt)
    return "B" if len(b) > len(a) else "A"

  model = ["a long answer"] * 5 + ["short"] * 3 + ["same size", "identical"]
  base = ["short"] * 5 + ["a long answer"] * 3 + ["size same", "identical"]
  metrics, rows = judge.pairwise([f"q{i}" for i in range(10)], model, base, longer, TEMPLATE)
  assert (metrics["win_rate"], metrics["loss_rate"], metrics["tie_rate"]) == (50.0, 30.0, 20.0)
  assert metrics["n_judged"] == 9.0 and metrics["position_consistency"] == pytest.approx(800 / 9)
  assert [r["outcome"] for r in rows] == ["win"] * 5 + ["loss"] * 3 + ["tie", "tie"]
  assert "verdicts" not in rows[-1] and rows[0]["response"] == "a long answer" and rows[0]["base_response"] == "short"
  assert metrics["win_p"] == pytest.approx(judge.paired.sign_test_p(3, 5))


def test_the_template_renders_both_orders():
  """The built-in template holds the three placeholders; each prompt is asked with the model's answer as A, then as
  B; a placeholder written inside an answer is left as it is."""
  text = judge.read_template()
  seen = []

  def record(prompt: str) -> str:
    seen.append(prompt)
    return "[[B]]"

  judge.pairwise(["What is 2 + 2?"], ["4, written {answer_b}"], ["five"], record, text)
  first, second = seen
  assert first == judge.render(text, "What is 2 + 2?", "4, written {answer_b}", "five")
  assert second == judge.render(text, "What is 2 + 2?", "five", "4, written {answer_b}")
  assert first.index("4, written {answer_b}") < first.index("five") and second.index("five") < second.index("4, wr")
  assert "{question}" not in first and first.count("What is 2 + 2?") == 1


class Scripted:
  """A subject that answers from a dict, as Judge.evaluate asks it (no model)."""

  def __init__(self, answers: dict[str, str]):
    self.answers, self.cache, self.is_base, self.asked = answers, {}, False, 0

  def respond(self, chats, settings, desc, reuse=False):
    self.asked += 1
    texts = [self.answers[chat[-1]["content"]] for chat in chats]
    return texts, [len(t.split()) for t in texts]


def test_the_suite_takes_a_stub_judge_in_pairwise_mode():
  """Records whose judge is a callable: the suite asks it instead of a model; the base answers once, and a model
  that is its base takes those answers (all ties, the judge not asked)."""
  def longer(prompt: str) -> str:
    a, b = _answers(prompt)
    return "A" if len(a) > len(b) else "B"

  prompts = ["one?", "two?", "three?"]
  model = Scripted({"one?": "a long answer", "two?": "short", "three?": "a long answer"})
  base = Scripted({"one?": "short", "two?": "a long answer", "three?": "tiny"})
  records = judge.Records(prompts, "pairwise", longer, TEMPLATE)
  out = judge.Judge().evaluate({"model": model, "base": base}, records, Settings(progress=False))
  assert list(out) == ["model"] and [r["outcome"] for r in out["model"].rows] == ["win", "loss", "win"]
  assert out["model"].metrics["win_rate"] == pytest.approx(200 / 3) and out["model"].bars["wins"] > 0
  assert_verdicts_reproduce(judge.Judge(), out["model"], {"win_rate", "loss_rate", "tie_rate"})
  model.is_base = True
  again = judge.Judge().evaluate({"model": model, "base": base}, records, Settings(progress=False))
  assert again["model"].metrics["tie_rate"] == 100.0 and again["model"].metrics["n_judged"] == 0.0
  assert (base.asked, model.asked) == (1, 1)


def test_judge_rows_say_which_answers_are_non_answers():
  """A win is read beside what won: each row says whether the model's answer and the base's are non-answers."""
  prompts = ["Write a short blog post about tea.", "Is the sun a star?"]
  model = Scripted({prompts[0]: "[Title]\n[Introduction]\n[Paragraph 1]\n[Conclusion]", prompts[1]: "Yes."})
  base = Scripted({prompts[0]: "Tea is brewed from the leaves of a shrub and drunk around the world, hot or iced.",
                   prompts[1]: "Yes, the sun is a star."})
  records = judge.Records(prompts, "pairwise", lambda prompt: "A", TEMPLATE)
  rows = judge.Judge().evaluate({"model": model, "base": base}, records, Settings(progress=False))["model"].rows
  assert [(r["non_answer"], r["non_answer_kind"], r["base_non_answer"]) for r in rows] == [
      (True, "placeholder", False), (False, None, False)]


@pytest.mark.parametrize("reply, expected", [
    ("A", "A"), ("B.", "B"), ("[[B]]", "B"), ("Answer: A", "A"), ("The better one is B, then A.", "B"),
    ("Answer B is better", "B"), ("Both are fine.", None), ("ABBA", None), ("a", None), ("", None)])
def test_the_verdict_is_the_first_standalone_a_or_b(reply, expected):
  assert judge.verdict(reply) == expected


# --- the suite ----------------------------------------------------------------------------------------------------

def _read(limit=3, live=False, data=None, **inputs):
  sources = Sources(Settings(limit=limit), subset=limit, data=data or {}, inputs=Inputs(**inputs), live=live)
  return judge.Judge().read(sources)


def test_bad_judge_settings_name_the_flag_or_file(tmp_path, tiny_hf_dir):
  with pytest.raises(UserError, match=r"^--judge_mode: unknown mode 'best'; known: relevance, pairwise$"):
    _read(judge_mode="best")
  with pytest.raises(FileNotFoundError, match=r"^--judge .*missing: no such file or directory$"):
    _read(judge=str(tmp_path / "missing"))
  with pytest.raises(UserError, match=r"^config.eval.judge_mode pairwise needs config.eval.judge SRC"):
    _read(live=True, judge_mode="pairwise")
  with pytest.raises(UserError, match=r"^--judge_template .*judge_pairwise.txt: a template of --judge_mode pairwise, "
                                     r"and the mode is relevance$"):
    _read(judge_template=judge.TEMPLATE)
  bad = tmp_path / "bad.txt"
  bad.write_text("Which is better, {answer_a} or {answer_b}?\n")
  with pytest.raises(UserError, match=r"^--judge_template .*bad.txt: no \{question\} placeholder"):
    _read(judge=tiny_hf_dir, judge_mode="pairwise", judge_template=str(bad))
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text('{"prompt": "Say hi."}\n{"key": 2, "prompt": "Say bye.", "instruction_id_list": []}\n'
                     '{"prompt": ""}\n')
  assert _read(limit=2, data={"judge": str(prompts)}).prompts == ["Say hi.", "Say bye."]  # the bad line unread
  with pytest.raises(UserError, match=r"prompts.jsonl:3: 'prompt' must be a non-empty string"):
    judge.read_prompts(str(prompts))
  assert _read(n_general=2).prompts == list(judge.GENERAL_PROMPTS[:2])
  # On the command line: one line each, before any model loads.
  out = str(tmp_path / "o")
  ran = itjax_in_process("eval", "--model", tiny_hf_dir, "--suites", "judge", "--judge", str(tmp_path / "nope"),
                         "--out", out)
  assert ran.returncode == 1 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
  assert f"--judge {tmp_path / 'nope'}: no such file or directory" in ran.stderr
  ran = itjax_in_process("eval", "--model", tiny_hf_dir, "--suites", "judge", "--judge", tiny_hf_dir,
                         "--judge_mode", "pairwise", "--judge_template", str(bad), "--out", out)
  assert ran.returncode == 1 and len(ran.stderr.strip().splitlines()) == 1 and str(bad) in ran.stderr
  ran = itjax_in_process("eval", "--model", tiny_hf_dir, "--suites", "judge", "--judge_mode", "best", "--out", out)
  assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1 and "--judge_mode" in ran.stderr


@pytest.fixture(scope="module")
def other_tiny_dir(tiny_hf_dir, tmp_path_factory):
  """The tiny model with every weight moved a little: another model that answers otherwise, same tokenizer."""
  import torch
  import transformers
  path = tmp_path_factory.mktemp("tiny-other")
  model = transformers.LlamaForCausalLM.from_pretrained(tiny_hf_dir)
  torch.manual_seed(1)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.5 * p.std() * torch.randn_like(p))
  model.save_pretrained(path)
  for name in os.listdir(tiny_hf_dir):
    if "token" in name or name.endswith(".jinja"):
      shutil.copy(os.path.join(tiny_hf_dir, name), path)
  return str(path)


def _rows(out) -> list[dict]:
  """judge.jsonl's rows (split at line breaks only: a random model's answers hold other separators, U+2028)."""
  return [json.loads(line) for line in (out / "judge.jsonl").read_text(encoding="utf-8").split("\n") if line]


def test_eval_runs_the_judge_suite_in_both_modes(tiny_hf_dir, other_tiny_dir, tmp_path):
  """`itjax eval --suites judge` on tiny random models: relevance (the base judges) on the prompts of a --data
  file, and pairwise with a judge model and a template file; results.json, report.md and judge.jsonl (a row per
  prompt, both answers)."""
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("Say hello.", "Name a colour.",
                                                                         "Count to three.")))
  common = ("--model", other_tiny_dir, "--base", tiny_hf_dir, "--suites", "judge", "--max_new_tokens", "4",
            "--batch_size", "4")
  out = tmp_path / "relevance"
  ran = itjax_in_process("eval", *common, "--data", f"judge={prompts}", "--out", str(out))
  assert ran.returncode == 0, ran.stderr[-3000:]
  result = json.loads((out / "results.json").read_text())["suites"]["judge"]
  m = result["model"]
  assert m["win_rate"] + m["loss_rate"] + m["tie_rate"] == pytest.approx(100.0) and m["n_prompts"] == 3.0
  assert result["delta"]["relevance"] == pytest.approx(m["relevance"] - result["base"]["relevance"])
  rows = _rows(out)
  assert [r["prompt"] for r in rows] == ["Say hello.", "Name a colour.", "Count to three."]
  assert all(r["subject"] == "model" and {"response", "base_response", "relevance", "base_relevance", "outcome"}
             <= set(r) for r in rows)
  assert "| relevance |" in (out / "report.md").read_text()

  out = tmp_path / "pairwise"
  template = tmp_path / "short.txt"
  template.write_text("{question} A: {answer_a} B: {answer_b} A or B?")
  ran = itjax_in_process("eval", *common, "--data", f"judge={prompts}", "--limit", "2", "--judge", tiny_hf_dir,
                         "--judge_mode", "pairwise", "--judge_template", str(template), "--out", str(out))
  assert ran.returncode == 0, ran.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  m = results["suites"]["judge"]["model"]
  assert m["win_rate"] + m["loss_rate"] + m["tie_rate"] == pytest.approx(100.0) and m["n_prompts"] == 2.0
  assert results["settings"]["judge"] == tiny_hf_dir and results["settings"]["judge_mode"] == "pairwise"
  assert results["settings"]["judge_template"] == str(template)
  rows = _rows(out)
  assert [r["prompt"] for r in rows] == ["Say hello.", "Name a colour."]
  assert all(r["outcome"] in ("win", "loss", "tie") for r in rows)
  assert any("verdicts" in r for r in rows)  # the answers differ, so the judge was asked


def test_the_judge_runs_inside_training_against_the_frozen_base(tiny_hf_dir, monkeypatch):
  """config.eval.suites = ('judge',) on live LoRA params: with the adapters at zero the model is its base, whose
  answers it takes (every prompt a tie); the base's answers and their relevance are kept for the next evaluation."""
  tiny = _tiny_subject(tiny_hf_dir)
  evaluator, trainable = live_lora_evaluator(tiny, suites=("judge",), subset=2, max_new_tokens=4)
  scored, real = [], judge.relevance
  monkeypatch.setattr(judge, "relevance", lambda subject, prompts, answers, desc=None: scored.append(
      len(answers)) or real(subject, prompts, answers, desc))
  first = evaluator(trainable, tiny.params)["judge"]
  assert scored == [2]  # the model's answers are the base's: each scored once
  m = first.metrics
  assert (m["tie_rate"], m["n_prompts"]) == (100.0, 2.0)
  assert [r["relevance"] for r in first.rows] == [r["base_relevance"] for r in first.rows]
  kept = evaluator.subjects["base"].cache["judge"]
  assert [r["prompt"] for r in first.rows] == list(judge.GENERAL_PROMPTS[:2])
  assert [r["response"] for r in first.rows] == [r["base_response"] for r in first.rows] == kept["answers"]
  assert [r["base_relevance"] for r in first.rows] == kept["relevance"]["base"]
  base = evaluator.subjects["base"]
  base.respond = lambda *a, **k: pytest.fail("the base answered again")
  second = evaluator(trainable, tiny.params)["judge"]
  assert second.metrics == first.metrics and base.cache["judge"] is kept


def test_suites_that_reuse_answers_decode_each_prompt_once():
  """The forgetting and judge suites ask the same general prompts: with reuse a subject decodes each once per
  params; without it (the latency suite times its decoding) it decodes every time."""
  from itjax.evals.subject import Settings, Subject
  calls = []
  subject = Subject("model", None, {}, None)
  subject._generate = lambda prompts, settings, desc, batch_size: calls.append(len(prompts)) or [
      f"answer to {p}" for p in prompts]
  settings = Settings(progress=False)
  first = subject.generate([[1, 2], [3]], settings, "forgetting", reuse=True)
  again = subject.generate([[3], [4], [1, 2]], settings, "judge", reuse=True)
  assert calls == [2, 1] and again == [first[1], "answer to [4]", first[0]]
  subject.generate([[3]], settings, "latency")
  subject.generate([[3]], Settings(max_new_tokens=8, progress=False), "shorter", reuse=True)
  assert calls == [2, 1, 1, 1]
  subject.set_params({})  # new params: nothing is reused
  subject.generate([[3]], settings, "after a step", reuse=True)
  assert calls == [2, 1, 1, 1, 1]
