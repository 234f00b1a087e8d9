"""The wordings of the generated tasks' constraint sentences: three phrasings of each constraint and of the line a
record without a layout gets, how a record's `prompt_parts` spell its prompt, and how a sentence's phrasing is drawn
(`phrasings` "one": always the first, the default for training; "all": any of them); and the task-name format, a
record's prompt without natural-language instructions (`as_format`).
"""

from __future__ import annotations

import random

from itjax.errors import UserError

# Every constraint sentence in several wordings of one requirement (the verifier is the same for all of them).
# Phrasing 0 is what trains by default (phrasings "one"); the rigidity suite rewords prompts with the others.
_PHRASINGS = {
    "bullets": ("Format your answer as exactly {n} markdown bullet points, each line starting with \"* \".",
                "Answer with a bulleted list of exactly {n} items, like \"* item\".",
                "Give exactly {n} bullet points, starting every line with an asterisk and a space (\"* \")."),
    "numbered": ("Present the answer as a numbered list (1. 2. 3. ...), one item per line.",
                 "Write the items as a numbered list starting at 1.",
                 "Number the items from 1 upwards, putting each numbered item on a separate line."),
    "paragraphs": ("Write exactly {n} paragraphs, one item per paragraph, separated by a line containing only ***.",
                   "Put each item in its own paragraph: exactly {n} paragraphs with the divider *** between them.",
                   "Split the answer into {n} paragraphs holding one item each, with a line of just *** between "
                   "neighbouring paragraphs."),
    "json": ("Return only a JSON object of the form {shape} and nothing else.",
             "Wrap your entire output in JSON: a single object shaped like {shape}.",
             "Reply with one JSON object, {shape}, and no text around it."),
    "lowercase": ("Your entire response should be in lowercase letters; no capital letters are allowed.",
                  "Write everything in lowercase.",
                  "Use small letters only throughout the reply and avoid capitals entirely."),
    "uppercase": ("Your entire response must be in English capital letters only.",
                  "Write the whole response in uppercase.",
                  "Every letter of your reply has to be a capital letter."),
    "title": ("Include a title wrapped in double angular brackets on the first line, such as <<the answer>>.",
              "Start with a title in double angular brackets, for example <<my reply>>.",
              "The first line must be a title enclosed in << and >>, like <<results>>."),
    "end_phrase": ('End your response with the exact phrase "{phrase}"; nothing may follow it.',
                   'Finish your reply with this exact phrase: "{phrase}"',
                   'The last words of your response must be "{phrase}" with nothing after them.'),
    "no_commas": ("Do not use any commas in your response.", "Refrain from using commas anywhere in your reply.",
                  "Your reply must not contain a single comma."),
    "quotes": ("Wrap your entire response in double quotation marks.", "Put the whole response inside double quotes.",
               "Enclose everything you write between a pair of double quotation marks."),
}
# The line said when no layout is asked for, by form: list items, a scalar beside a title or end phrase, a bare scalar.
_DEFAULT_LINES = {
    "items": ("Put each item on its own line.", "Write one item per line.", "List the items on separate lines."),
    "alone": ("Write the {noun} on a line by itself.", "Put the {noun} alone on its own line.",
              "Give the {noun} on its own line with nothing else on that line."),
    "only": ("Reply with only the {noun}.", "Give just the {noun}.", "Answer with the {noun} and nothing else."),
}
PHRASING_MODES = ("one", "all")  # "one": phrasing 0 of every sentence; "all": any phrasing


def phrasings_of(sentence: dict) -> tuple[str, ...]:
  """The wordings (format strings) of a prompt_parts sentence: its constraint's, or its default form's."""
  return _DEFAULT_LINES[sentence["form"]] if sentence["id"] == "default" else _PHRASINGS[sentence["id"]]


def phrase_sentence(sentence: dict, index: int, fill: dict) -> dict:
  """The sentence said in phrasing `index`, filled with the record's values (n, phrase, shape, noun)."""
  return {**sentence, "phrasing": index, "text": phrasings_of(sentence)[index].format(**fill)}


def join_prompt(parts: dict) -> str:
  """The user prompt that a record's prompt_parts spell: the task text, then each sentence in order."""
  return " ".join([parts["task"], *(s["text"] for s in parts["sentences"])])


def check_phrasings(phrasings: str) -> None:
  if phrasings not in PHRASING_MODES:
    raise UserError(f"phrasings must be one of {', '.join(map(repr, PHRASING_MODES))}, got {phrasings!r}")


def default_form(n: int | None, mods: list[str]) -> str:
  """The default line a record without a layout gets: list items, a scalar alone on its line, or only the scalar."""
  if n is not None:
    return "items"
  return "alone" if {"title", "end_phrase"}.intersection(mods) else "only"


def drawn_sentence(rng: random.Random, sentence: dict, fill: dict, phrasings: str) -> dict:
  """The sentence in a drawn phrasing; "one" draws too but says phrasing 0, so both modes give the same tasks."""
  index = rng.randrange(len(phrasings_of(sentence)))
  return phrase_sentence(sentence, index if phrasings == "all" else 0, fill)


FORMATS = ("instruction", "task_name")


def task_name_prompt(record: dict) -> str:
  """The record's prompt as a multi-task format without natural-language instructions: the task's types by name and
  its input, e.g. 'task: extract_numbers+numbered+title' then 'input: ...' (and the end phrase to write, the one
  value a type's name does not give)."""
  parts, verifier = record["prompt_parts"], record["verifier"]
  lines = [f"task: {'+'.join(record['types'])}"]
  if verifier.get("phrase"):
    lines.append(f"end_phrase: {verifier['phrase']}")
  return "\n".join(lines + [f"input: {parts['input']}"])


def as_format(record: dict, fmt: str) -> dict:
  if fmt == "instruction":
    return record
  if fmt not in FORMATS:
    raise UserError(f"unknown task prompt format {fmt!r}; known: {', '.join(FORMATS)}")
  messages = [{"role": "user", "content": task_name_prompt(record)}, *record["messages"][1:]]
  return {**record, "messages": messages, "format": fmt}
