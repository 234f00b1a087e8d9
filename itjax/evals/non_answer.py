"""Non-answers: responses that do not attempt what the prompt asked, judged from the prompt and the response alone.

Constraint checkers read the form of a response (no commas, wrapped in quotes, N placeholders, a title) and pass a
response with no content. This module says whether a response tries to answer at all; it does not say whether the
answer is right. A wrong answer is an answer.

The rule, in the order it is applied (the first that holds gives the kind):

  empty        no letter or digit at all: nothing, blank lines, quote marks, bullets, markdown marks alone
  placeholder  its words, once bracketed placeholders ([name], {date}, <item>) are taken out, are too few (below)
  refusal      it begins by declining ("I can't", "I'm sorry, but", "As an AI") and says little else
               (under REFUSAL_WORDS words)
  echo         it repeats the prompt: nearly all of it (ECHO_SHARE) is made of runs of ECHO_MIN_TOKENS or more
               tokens copied from the prompt, and they copy at least half of the prompt
  repetition   it loops (itjax.evals.degenerate's verdict on its words and numbers, 16 or more, separators such
               as *** left out; or one word four or more times alone) and what it said before the loop began
               holds too few words the prompt does not (the thresholds below; one for a closed prompt). A loop
               after a real attempt is a degenerate answer (degenerate_rate), not a non-answer
  fragments    an open request (below) answered with a title and single letters, or lines of a word or two each
               that together stay under the open threshold
  too_short    an open request answered with fewer new words than it needs

A prompt is *closed* when it asks for a value or works on material it gives: yes/no and numeric questions, "reply
with only...", sorting, counting, converting, extracting (CLOSED_MARKERS). Any short answer to a closed prompt is an
answer, including words taken from the prompt ("Is a tomato a fruit or a vegetable?" -> "A fruit."). A prompt is
*open* when it asks for writing, an explanation, advice or an opinion (OPEN_MARKERS) and is not closed; a *long*
open prompt names a piece of writing (an essay, a story, two jokes, an ad: LONG_FORMS). An open answer must bring
OPEN_NEW_WORDS distinct words of two or more letters that the prompt does not hold (LONG_NEW_WORDS for a long
form); a prompt that is neither closed nor open (a plain question) is treated as closed. Words are counted after
placeholders are taken out; a character of a script written without spaces (Chinese, Japanese, Korean) counts as
a word.

The rule was written from the hand-written cases in tests/data/non_answer_cases.jsonl; 64 real answers of the
demo's base and tuned SmolLM2 in tests/data/non_answer_real.jsonl were labelled by eye before the rule saw them
(it agreed on 49 of 64 then; the repetition kind and the refusal length were fitted to them after). Both are held by
tests/test_non_answer.py.
"""

from __future__ import annotations

import re
from collections import Counter

from itjax.evals import degenerate

KINDS = ("empty", "placeholder", "refusal", "echo", "repetition", "fragments", "too_short")
OPEN_NEW_WORDS = 4
LONG_NEW_WORDS = 8
REFUSAL_WORDS = 80
ECHO_MIN_TOKENS = 4
ECHO_SHARE = 0.9

_PLACEHOLDER = re.compile(r"\[[\w '/.-]{1,40}\]|\{[\w '/.-]{1,40}\}|(?<!<)<[\w '/.-]{1,40}>(?!>)")
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_WORD = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]{{2,}}")
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")
_TOKEN = re.compile(r"\w+")
_REFUSAL = re.compile(r"^\W*(i\s*(?:'m|am)\s+sorry|sorry|i\s+(?:can\s*not|can't|cannot|won't|will not|am unable|'m "
                      r"unable|do not|don't)\b|as an ai|i\s+apologi[sz]e|unfortunately,? i)", re.I)

CLOSED_MARKERS = re.compile(
    r"\b(?:reply with only|respond with only|answer with only|return only|only the (?:number|date|word|answer|"
    r"acronym|name)|with (?:a single|one) word|in one word|yes or no|true or false|how many|how much|sort|arrange|"
    r"alphabetical|reverse|count|extract|convert|compute|calculate|acronym|duplicates?|largest|smallest|biggest|"
    r"which (?:is|one|letter|comes|of)|what (?:date|time|day|number|is \d+)|plural of|opposite of|last letter|"
    r"first letter|spell|translate|fruit or a vegetable|these (?:words|numbers)|the following (?:words|numbers|text)|"
    r"this (?:list|sentence|text)|sum|product of|add \d+|days (?:after|before)|yyyy|remove|"
    r"(?:number|date|word|acronym|answer|value|result) on a line|fact sheet|according to)\b|^\s*(?:is|are|was|were|do|does|did|can|could|has|have|"
    r"will|would|should)\b[^.!\n]*\?\s*$", re.I)
OPEN_MARKERS = re.compile(
    r"\b(?:write|compose|draft|create|generate|describe|explain|tell me|give (?:me )?(?:some|a few|\w+ )?(?:tips|"
    r"ideas|reasons|advice|examples|facts|suggestions)|tips|advice|suggest|discuss|elaborate|summari[sz]e|outline|"
    r"opinion|what do you think|your (?:view|thoughts)|argue|persuade|convince|imagine|brainstorm|plan|propose|"
    r"design|why|how (?:can|do|does|should|would|could) (?:i|you|we|one|a|an|the)\b|rewrite|expand)\b", re.I)
LONG_FORMS = re.compile(
    r"\b(?:essay|blog|post|story|stories|poem|poems|limerick|song|lyrics|rap|article|letter|email|e-mail|"
    r"speech|ad|ads|advert|advertisement|commercial|jokes?|riddle|description|review|report|summary|dialogue|"
    r"script|pitch|proposal|cover letter|note|memo|newsletter|paragraphs?|sentences|list of)\b", re.I)


def _without_placeholders(text: str) -> str:
  return _PLACEHOLDER.sub(" ", text)


def _words(text: str) -> list[str]:
  return [w.casefold() for w in _WORD.findall(text)]


def prompt_kind(prompt: str) -> str:
  """'closed' (a value or work on given material: short answers are answers), 'long' (a piece of writing), 'open'
  (writing, an explanation, advice or an opinion) or 'question' (neither: treated as closed)."""
  if CLOSED_MARKERS.search(prompt):
    return "closed"
  if OPEN_MARKERS.search(prompt):
    return "long" if LONG_FORMS.search(prompt) else "open"
  return "question"


def _echo(prompt: str, response: str) -> bool:
  """Nearly every token of the response (ECHO_SHARE) lies in a run of ECHO_MIN_TOKENS or more that the prompt
  holds, and those runs take up at least half of the prompt's."""
  n = ECHO_MIN_TOKENS
  answer = [t.casefold() for t in _TOKEN.findall(response)]
  asked = [t.casefold() for t in _TOKEN.findall(prompt)]
  if len(answer) < n or len(asked) < n:
    return False
  asked_grams = {tuple(asked[i:i + n]) for i in range(len(asked) - n + 1)}
  covered, echoed = [False] * len(answer), set()
  for i in range(len(answer) - n + 1):
    gram = tuple(answer[i:i + n])
    if gram in asked_grams:
      covered[i:i + n] = [True] * n
      echoed.add(gram)
  return sum(covered) >= ECHO_SHARE * len(answer) and len(echoed) >= 0.5 * len(asked_grams)


def _before_loop(tokens: list[str]) -> list[str]:
  """The tokens up to the end of the first occurrence of the n-gram (1 <= n <= 8) whose repeats cover most of them:
  what the response said before it started looping."""
  best, end = 0.0, len(tokens)
  for n in range(1, 9):
    if 2 * n > len(tokens):
      break
    counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    gram, count = counts.most_common(1)[0]
    if count < 2 or count * n <= best:
      continue
    covered, i, first = 0, 0, None
    while i <= len(tokens) - n:
      if tuple(tokens[i:i + n]) == gram:
        first = i if first is None else first
        covered += n
        i += n
      else:
        i += 1
    if covered > best:
      best, end = covered, first + n
  return tokens[:end]


def _single_word_loop(words: list[str]) -> bool:
  return len(words) >= 4 and len(set(words)) == 1


def _fragment_lines(text: str) -> bool:
  """At least three non-empty lines, most of them a single letter or a word or two."""
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  if len(lines) < 3:
    return False
  short = sum(len(_TOKEN.findall(l)) <= 2 for l in lines)
  return short >= 0.75 * len(lines)


def kind(prompt: str, response: str, reference: float = degenerate.DEFAULT_REFERENCE_RATIO) -> str | None:
  """The kind of non-answer `response` is to `prompt` (one of KINDS), or None for an answer. `reference` is the
  compression ratio the repetition check compares against (itjax.evals.degenerate)."""
  if not _LETTER_OR_DIGIT.search(response):
    return "empty"
  asks = prompt_kind(prompt)
  needed = {"open": OPEN_NEW_WORDS, "long": LONG_NEW_WORDS}.get(asks, 1)
  content = _without_placeholders(response)
  words = _words(content)
  has_value = bool(_LETTER_OR_DIGIT.search(content))
  if content != response and (not has_value or len(words) < needed and asks in ("open", "long")):
    return "placeholder"
  if _REFUSAL.search(response) and len(_words(response)) < REFUSAL_WORDS:
    return "refusal"
  if _echo(prompt, response):
    return "echo"
  tokens = [t.casefold() for t in _TOKEN.findall(content)]
  if degenerate.is_degenerate(" ".join(tokens), reference) or _single_word_loop(words):
    asked_tokens = {t.casefold() for t in _TOKEN.findall(prompt)}
    said = {t for t in _before_loop(tokens) if (t.isdigit() or len(t) > 1) and t not in asked_tokens}
    if len(said) < needed:
      return "repetition"
  if asks in ("open", "long"):
    asked = set(_words(prompt))
    new = {w for w in words if w not in asked}
    if len(new) < needed:
      return "fragments" if _fragment_lines(content) else "too_short"
  return None


def is_non_answer(prompt: str, response: str, reference: float = degenerate.DEFAULT_REFERENCE_RATIO) -> bool:
  return kind(prompt, response, reference) is not None


def mark(rows: list[dict], reference: float = degenerate.DEFAULT_REFERENCE_RATIO,
         prompt_of=lambda row: row["prompt"]) -> None:
  """Adds `non_answer` (a bool) and `non_answer_kind` (one of KINDS, or None) of its "response" to every row."""
  for row in rows:
    row["non_answer_kind"] = kind(prompt_of(row), row["response"], reference)
    row["non_answer"] = row["non_answer_kind"] is not None


def add_non_answers(outputs: dict, prompt_of=lambda row: row["prompt"]) -> None:
  """Adds `non_answer` (a bool) and `non_answer_kind` (one of KINDS, or None) to every row of each output (a
  SuiteOutput by role), `non_answer_rate` (percent) to its metrics, and, where the 'model' and 'base' outputs
  answer the same prompts, the paired changes of non-answers and degenerate answers to the model's metrics
  (itjax.evals.paired). Repetition is judged against the base's answers when there is a base."""
  from itjax.evals import paired
  base = outputs.get("base")
  reference = (degenerate.reference_ratio([r["response"] for r in base.rows]) if base is not None
               else degenerate.DEFAULT_REFERENCE_RATIO)
  for output in outputs.values():
    mark(output.rows, reference, prompt_of)
    if output.rows:
      output.metrics["non_answer_rate"] = 100.0 * sum(r["non_answer"] for r in output.rows) / len(output.rows)
  model = outputs.get("model")
  if model is not None and base is not None:
    for field in ("non_answer", "degenerate"):
      model.metrics.update(paired.changes(model.rows, base.rows, field))


def put_first(metrics: dict, names: tuple[str, ...]) -> None:
  """Reorders `metrics` in place: `names` (those present) first, in that order, so that reports show a raw score
  beside its answered one."""
  first = {k: metrics[k] for k in names if k in metrics}
  rest = {k: v for k, v in metrics.items() if k not in first}
  metrics.clear()
  metrics.update(first)
  metrics.update(rest)
