"""Chat templates: the named built-ins and a sandboxed Jinja renderer for any template string.

A template is rendered to text; the tokenizer turns the text into ids (special tokens in the text map to their ids).
Messages are dicts with `role` in {system, user, assistant} and a string `content`.
"""

from __future__ import annotations

import difflib
import functools

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from itjax.errors import UserError

ROLES = ("system", "user", "assistant")
NO_TEMPLATE = "none"  # a chat_template value: no template; a chat's turns as plain text (for base models)
# What 'none' renders a chat as: its turns' text, a blank line between them (a single prompt: the prompt as it stands).
PLAIN = "{% for m in messages %}{% if not loop.first %}{{ '\\n\\n' }}{% endif %}{{ m['content'] }}{% endfor %}"

BUILTIN_TEMPLATES: dict[str, str] = {
    # <|im_start|>role\ncontent<|im_end|>\n per turn (Qwen, SmolLM, many others).
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    # Llama 3 / 3.1 / 3.2 instruct format; the BOS text comes first, once.
    "llama3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
    # Stanford Alpaca's prompt, one Instruction/Response block per user/assistant pair; a system message replaces
    # the preamble; each response ends with EOS.
    "alpaca": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
        "{% else %}{{ 'Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.' }}{% endif %}{{ '\\n\\n' }}"
        "{% for m in messages if m['role'] != 'system' %}"
        "{% if m['role'] == 'user' %}{{ '### Instruction:\\n' + m['content'] + '\\n\\n### Response:\\n' }}"
        "{% else %}{{ m['content'] + eos_token + '\\n\\n' }}{% endif %}{% endfor %}"),
    # Gemma's format: BOS, then <start_of_turn>user|model, the content, <end_of_turn> and a newline per turn. Gemma
    # has no system role: a system message opens the first user turn, followed by a blank line. Turns alternate.
    "gemma": (
        "{{ bos_token }}{% set system = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}"
        "{% for m in messages if m['role'] != 'system' %}"
        "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('gemma template: the turns after a system message must alternate user, assistant, "
        "user, ...') }}{% endif %}"
        "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\\n' }}"
        "{% if loop.first and system %}{{ system + '\\n\\n' }}{% endif %}"
        "{{ (m['content'] | trim) + '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"),
}


def _raise(message: str):
  raise jinja2.TemplateError(message)


@functools.lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
  env.globals["raise_exception"] = _raise
  return env.from_string(template)


def resolve(template: str | None, own: str | None) -> str:
  """A built-in name, a literal template, 'none' (the turns as plain text), or (None) the tokenizer's own
  template."""
  if template is None:
    if own is None:
      raise UserError(f"the tokenizer has no chat template; name one of {sorted(BUILTIN_TEMPLATES)}")
    return own
  if template in BUILTIN_TEMPLATES:
    return BUILTIN_TEMPLATES[template]
  if template == NO_TEMPLATE:
    return PLAIN
  if "messages" not in template or ("{{" not in template and "{%" not in template):  # a typo would render as text
    close = difflib.get_close_matches(template, BUILTIN_TEMPLATES, n=1)
    raise UserError(f"chat template {template!r:.80} is neither a built-in name ({', '.join(BUILTIN_TEMPLATES)}) "
                    "nor a Jinja template that renders `messages`" + (f"; did you mean {close[0]!r}?" if close else ""))
  return template


def validate(messages: list[dict]) -> None:
  if not isinstance(messages, list) or not messages:
    raise UserError("messages must be a non-empty list")
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
      raise UserError(f"message {i}: expected {{'role': one of {ROLES}, 'content': str}}, got {m!r}")


def render(template: str, messages: list[dict], add_generation_prompt: bool, **special_tokens) -> str:
  """Renders messages with a Jinja chat template (bos_token / eos_token etc. passed as keywords)."""
  validate(messages)
  try:
    return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     **special_tokens)
  except jinja2.TemplateError as e:  # a template's own raise_exception, or a broken template
    raise UserError(f"chat template: {e}") from None
