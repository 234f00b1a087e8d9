"""Loss masks from token spans: exactly the assistant messages and their end-of-turn tokens are trained."""

import numpy as np
import pytest

from conftest import make_llama3_style_tokenizer
from itjax.data import encode
from itjax.data.formats import DataError
from itjax.interop.loading import load_tokenizer
from itjax.data.tokenizer import HFTokenizer

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
TURNS = [{"role": "user", "content": "What is the capital of France?"},
         {"role": "assistant", "content": "Paris is the capital of France."},
         {"role": "user", "content": "List three colours."},
         {"role": "assistant", "content": "Red, green and blue."}]
CONVERSATIONS = {"single": TURNS[:2], "single+system": [SYSTEM] + TURNS[:2], "multi": TURNS,
                 "multi+system": [SYSTEM] + TURNS}
# A Llama-2-style template for the SentencePiece tokenizer: [INST] user [/INST] answer </s>, system folded in.
LLAMA2_STYLE = (
    "{% for m in messages if m['role'] != 'system' %}"
    "{% if m['role'] == 'user' %}{{ bos_token }}[INST] "
    "{% if loop.first and messages[0]['role'] == 'system' %}<<SYS>> {{ messages[0]['content'] }} <</SYS>> "
    "{% endif %}{{ m['content'] }} [/INST]{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}")


@pytest.fixture(scope="module", params=["smollm2", "smollm2-builtin-chatml", "llama3-style", "sentencepiece-llama2",
                                        "sentencepiece-alpaca"])
def tok_and_template(request, smollm2_gguf, sp_model):
  if request.param.startswith("smollm2"):  # the GGUF's own chat template, or the built-in chatml
    return load_tokenizer(smollm2_gguf), "chatml" if request.param.endswith("chatml") else None
  if request.param == "llama3-style":
    return HFTokenizer(make_llama3_style_tokenizer()), None
  return load_tokenizer(sp_model), LLAMA2_STYLE if request.param == "sentencepiece-llama2" else "alpaca"


def trained_spans(ids, mask):
  spans, start = [], None
  for t, m in enumerate(list(mask) + [False]):
    if m and start is None:
      start = t
    elif not m and start is not None:
      spans.append((start, t))
      start = None
  return spans


@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("train_on", ["all", "last"])
def test_mask_is_the_assistant_messages_plus_end_of_turn(tok_and_template, name, train_on):
  tok, template = tok_and_template
  messages = CONVERSATIONS[name]
  ids, mask = encode.encode_chat(tok, messages, template, train_on)
  assert ids.dtype == np.int32 and mask.dtype == bool and len(ids) == len(mask) and not mask[0]
  answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
  if train_on == "last":
    answers = answers[-1:]
  spans = trained_spans(ids, mask)
  assert len(spans) == len(answers)
  for (start, end), i in zip(spans, answers):
    span = ids[start:end].tolist()
    assert span[-1] in tok.eos_ids  # the end-of-turn token (EOS) is always trained ...
    assert tok.decode(span[:-1]).strip() == messages[i]["content"]  # ... after exactly the message
    # The prompt in front of the turn is what inference feeds the model for that turn.
    assert ids[:start].tolist() == tok.encode_chat(messages[:i], add_generation_prompt=True, template=template)
  if isinstance(tok, HFTokenizer):  # with visible special tokens: message + end-of-turn token, nothing else
    eot = tok.decode([tok.eos_ids[0]], skip_special_tokens=False)
    assert [tok.decode(ids[s:e], skip_special_tokens=False) for s, e in spans] == [
        messages[i]["content"] + eot for i in answers]
  # The whole example is the conversation as the template renders it.
  if train_on == "all":
    assert ids.tolist() == tok.encode_chat(messages, add_generation_prompt=False, template=template)


def test_templates_that_would_give_an_empty_mask_raise(sp_model):
  tok = HFTokenizer(make_llama3_style_tokenizer())
  users_only = "{% for m in messages if m['role'] == 'user' %}{{ m['content'] }}\n{% endfor %}"
  with pytest.raises(DataError, match="x.jsonl:3: assistant turn has no EOS token"):
    encode.encode_chat(tok, TURNS[:2], users_only, where="x.jsonl:3")
  no_eos = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
  with pytest.raises(DataError, match="assistant turn has no EOS token.*never learn to stop"):
    encode.encode_chat(tok, TURNS[:2], no_eos)
  # chatml's <|im_end|> is no EOS of this SentencePiece model: the pair is refused, not trained without a stop.
  with pytest.raises(DataError, match="assistant turn has no EOS token"):
    encode.encode_chat(load_tokenizer(sp_model), TURNS[:2], "chatml")
  unstable = ("{% if messages | length > 2 %}Long chat.\n{% endif %}{% for m in messages %}{{ m['content'] }}"
              "{{ eos_token }}{% endfor %}")
  with pytest.raises(DataError, match="template is not prefix-stable"):
    encode.encode_chat(tok, TURNS, unstable)
  raising = "{{ raise_exception('roles must alternate') }}"
  with pytest.raises(DataError, match="chat template error.*roles must alternate"):
    encode.encode_chat(tok, TURNS[:2], raising)


def test_text_records_train_every_token_and_end_with_eos():
  tok = HFTokenizer(make_llama3_style_tokenizer())
  ids, mask = encode.encode_text(tok, "The quick brown fox.")
  assert ids[0] == tok.bos_id and ids[-1] == tok.eos_ids[0]
  assert not mask[0] and mask[1:].all()
  assert tok.decode(ids) == "The quick brown fox."


def test_fit_length():
  ids = np.arange(10, dtype=np.int32)
  mask = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], bool)  # a 4-token prompt, then the response
  assert encode.fit_length(ids, mask, 9, "drop", "f:1")[2] is False  # 10 tokens fill 9 slots
  cut_ids, cut_mask, cut = encode.fit_length(ids, mask, 6, "truncate", "f:1")
  assert cut and cut_ids.tolist() == list(range(7)) and cut_mask.tolist() == [0, 0, 0, 0, 1, 1, 1]
  with pytest.raises(DataError, match="f:1: longer than max_len"):
    encode.fit_length(ids, mask, 6, "drop", "f:1")
  with pytest.raises(DataError, match="f:1: prompt longer than max_len"):
    encode.fit_length(ids, mask, 3, "truncate", "f:1")
