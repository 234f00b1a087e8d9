"""Chat rendering and tokenizers: token ids equal transformers' apply_chat_template; SentencePiece round trips."""

import json
import subprocess
import sys

import pytest

from conftest import make_llama3_style_tokenizer
from itjax.data import chat
from itjax.interop.loading import load_tokenizer
from itjax.data.tokenizer import HFTokenizer, SentencePieceTokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris is the capital of France."},
     {"role": "user", "content": "List three colours."}],
    [{"role": "system", "content": "Answer briefly."},
     {"role": "user", "content": "1 2 3?"},
     {"role": "assistant", "content": " 4 5 6 \n"},
     {"role": "user", "content": "Numbers: 7 8 9"},
     {"role": "assistant", "content": "10."}],
]


def hf_ids(tok, conversation, add_generation_prompt):
  out = tok.apply_chat_template(conversation, tokenize=True, add_generation_prompt=add_generation_prompt)
  return out["input_ids"] if hasattr(out, "keys") else out


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_llama3_style_template_matches_transformers(tiny_hf_dir, add_generation_prompt):
  hf = make_llama3_style_tokenizer()
  ours = load_tokenizer(tiny_hf_dir)  # the same tokenizer, read back from a HF directory
  assert isinstance(ours, HFTokenizer) and ours.add_bos
  for conversation in CONVERSATIONS:
    want = hf_ids(hf, conversation, add_generation_prompt)
    assert ours.encode_chat(conversation, add_generation_prompt) == want
    # The built-in llama3 template renders the same format; the template's BOS is not doubled.
    assert ours.encode_chat(conversation, add_generation_prompt, template="llama3") == want
    assert want.count(hf.bos_token_id) == 1


def test_a_generic_fast_tokenizer_loads_as_autotokenizer_does_without_its_registry(tiny_hf_dir):
  """tokenizer.json with the generic class: the same tokenizer, without importing AutoTokenizer's registry (which
  costs every command a few seconds)."""
  script = ("import json, sys\nfrom itjax.interop.loading import load_tokenizer\n"
            f"t = load_tokenizer({tiny_hf_dir!r})\nc = [{{'role': 'user', 'content': 'Hi there, you.'}}]\n"
            "print(json.dumps([t.encode('Hello there, world'), t.encode_chat(c), t.eos_ids,\n"
            "                  'transformers.models.auto.tokenization_auto' in sys.modules]))\n")
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
  encoded, chat_ids, eos_ids, imported_auto = json.loads(done.stdout.splitlines()[-1])
  from transformers import AutoTokenizer
  auto = HFTokenizer(AutoTokenizer.from_pretrained(tiny_hf_dir, local_files_only=True))
  assert encoded == auto.encode("Hello there, world") and not imported_auto
  assert chat_ids == auto.encode_chat([{"role": "user", "content": "Hi there, you."}])
  assert list(eos_ids) == list(auto.eos_ids)


@pytest.mark.slow
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_template_matches_transformers(smollm2_gguf, hf_smollm2_tokenizer, add_generation_prompt):
  pytest.importorskip("torch")
  hf = hf_smollm2_tokenizer
  ours = load_tokenizer(smollm2_gguf)
  assert not ours.add_bos
  for conversation in CONVERSATIONS:
    want = hf_ids(hf, conversation, add_generation_prompt)
    assert ours.encode_chat(conversation, add_generation_prompt) == want
    if conversation[0]["role"] == "system":  # SmolLM2's template is chatml once a system message is given
      assert ours.encode_chat(conversation, add_generation_prompt, template="chatml") == want


def test_builtin_templates_render():
  conv = CONVERSATIONS[1][:3]
  text = chat.render(chat.BUILTIN_TEMPLATES["alpaca"], conv, False, bos_token="<s>", eos_token="</s>")
  assert text == ("<s>You are a helpful assistant.\n\n### Instruction:\nWhat is the capital of France?\n\n"
                  "### Response:\nParis is the capital of France.</s>\n\n")
  text = chat.render(chat.BUILTIN_TEMPLATES["chatml"], conv[1:2], True)
  assert text == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
  with pytest.raises(ValueError, match="message 0"):
    chat.render(chat.BUILTIN_TEMPLATES["chatml"], [{"role": "robot", "content": "hi"}], True)
  with pytest.raises(ValueError, match="no chat template"):
    chat.resolve(None, None)


def test_the_gemma_template_renders_gemmas_format():
  """Gemma's documented turn format; its system message opens the first user turn; content is trimmed; turns must
  alternate."""
  render = lambda conv, gen: chat.render(chat.BUILTIN_TEMPLATES["gemma"], conv, gen, bos_token="<bos>")  # noqa: E731
  assert render(CONVERSATIONS[2], False) == (
      "<bos><start_of_turn>user\nAnswer briefly.\n\n1 2 3?<end_of_turn>\n<start_of_turn>model\n4 5 6<end_of_turn>\n"
      "<start_of_turn>user\nNumbers: 7 8 9<end_of_turn>\n<start_of_turn>model\n10.<end_of_turn>\n")
  assert render(CONVERSATIONS[0], True) == "<bos><start_of_turn>user\nHello there!<end_of_turn>\n<start_of_turn>model\n"
  with pytest.raises(Exception, match="must alternate user, assistant"):
    render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], True)


def test_a_template_name_typo_is_refused_not_rendered_as_text():
  """`chatm1` is neither a built-in name nor a template: taken literally, every prompt would render as 'chatm1'."""
  with pytest.raises(ValueError, match="chat template 'chatm1' is neither a built-in name .* did you mean 'chatml'"):
    chat.resolve("chatm1", "{{ messages }}")
  with pytest.raises(ValueError, match="nor a Jinja template that renders `messages`"):
    chat.resolve("{{ bos_token }}hello", None)  # Jinja, but it ignores the conversation
  own = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
  assert chat.resolve(own, None) == own and chat.resolve("chatml", None) == chat.BUILTIN_TEMPLATES["chatml"]
  assert chat.resolve(None, own) == own


def test_sentencepiece_round_trip(sp_model):
  tok = load_tokenizer(sp_model)
  assert isinstance(tok, SentencePieceTokenizer)
  for text in ["The quick brown fox.", "Paris is the capital of France!", "Unseen wörds: Zebra-42 ünd ✓"]:
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert tok.decode(ids) == text


def test_sentencepiece_chat(sp_model):
  tok = load_tokenizer(sp_model)
  conv = CONVERSATIONS[1][:3]
  ids = tok.encode_chat(conv, add_generation_prompt=False, template="alpaca")
  assert ids.count(tok.bos_id) == 1 and ids[0] == tok.bos_id  # template BOS text, not doubled
  assert ids[-1] == tok.eos_ids[0] and ids.count(tok.eos_ids[0]) == 1  # the response ends with EOS
  # (SentencePiece's normaliser folds the template's newlines into spaces; the words survive.)
  assert tok.decode(ids).endswith("### Response: Paris is the capital of France.")
  im = tok.encode_chat(conv[1:2], True, template="chatml")
  start = tok.sp.piece_to_id("<|im_start|>")
  assert im.count(start) == 2  # user-defined pieces in the text map to their ids
