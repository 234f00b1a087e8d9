"""Questions grounded in a short fact sheet about an invented entity, and how to judge an answer to one.

A fact sheet lists a few attributes of a company, town or ship that exists nowhere: every name on it is built from
syllables by a seeded `random.Random`. Half the questions ask for an attribute on the sheet, whose value is the
answer; the other half ask for an attribute of the same kind of entity that the sheet does not hold. No value is
ever drawn for that attribute, so nothing in the prompt can answer it and the right reply is an abstention.

`abstention_class` recognises an abstention by what it means (not stated, unknown, cannot tell, insufficient
information), whatever its wording, casing or contractions; `judge` labels a response (see its docstring).
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Callable

ABSTENTION = "The sheet does not say."  # the reference reply to an unanswerable question
INSTRUCTION = "Answer from the sheet only. If the sheet does not say, say so."
LABELS = ("correct", "partial", "wrong", "abstained", "fabricated", "empty")

_SYLLABLES = ("bra", "dor", "vel", "mor", "ak", "ul", "van", "ta", "kel", "rin", "zo", "thu", "mi", "sa", "ler",
              "quin", "gor", "ev", "las", "tro", "fen", "wy", "nel", "dru", "os", "pim", "car", "ib", "hul", "sten")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey", "gray", "brown", "pink",
           "gold", "silver", "teal", "violet", "crimson", "navy", "maroon", "turquoise", "scarlet", "indigo", "amber",
           "ivory", "beige")
PRODUCTS = ("lanterns", "bicycles", "umbrellas", "violins", "telescopes", "kettles", "carpets", "candles", "clocks",
            "saddles", "barrels", "buttons", "pianos", "rope", "soap", "tiles", "bells", "compasses")
GOODS = ("timber", "wool", "salt", "coffee", "tea", "copper", "grain", "spices", "cotton", "coal", "iron", "silk",
         "wine", "cheese", "honey", "marble", "tin", "rice", "sugar", "olives")


@dataclasses.dataclass(frozen=True)
class Attribute:
  """One line a sheet may hold: its label, questions asking for it ({name} is the entity) and how to draw a value
  (given the names already used on the sheet, so that no invented name appears twice)."""
  label: str
  questions: tuple[str, ...]
  draw: Callable[[random.Random, set[str]], str]


@dataclasses.dataclass(frozen=True)
class Kind:
  """A kind of invented entity: how the sheet names it, the suffixes its name may take and its attributes."""
  label: str
  suffixes: tuple[str, ...]
  attributes: dict[str, Attribute]


def _invented_word(rng: random.Random, used: set[str]) -> str:
  """A capitalised word of 2-3 syllables that is no common or value word and is not yet on the sheet."""
  while True:
    word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    if len(word) >= 5 and word.lower() not in _COMMON | VALUE_WORDS and word not in used:
      used.add(word)
      return word


def _year(lo: int, hi: int):
  return lambda rng, used: str(rng.randint(lo, hi))


def _count(lo: int, hi: int):
  return lambda rng, used: str(rng.randint(lo, hi))


def _place(rng: random.Random, used: set[str]) -> str:
  return _invented_word(rng, used)


def _person(rng: random.Random, used: set[str]) -> str:
  return f"{_invented_word(rng, used)} {_invented_word(rng, used)}"


def _one_of(words: tuple[str, ...]):
  return lambda rng, used: rng.choice(words)


KINDS = {
    "company": Kind("Company", ("Works", "Trading", "Mills", "Foundry"), {
        "founded": Attribute("Founded", ("In what year was {name} founded?", "When was {name} founded?"),
                             _year(1820, 2015)),
        "headquarters": Attribute("Headquarters", ("In which city is {name} based?",
                                                   "Where are the headquarters of {name}?"), _place),
        "employees": Attribute("Employees", ("How many people work at {name}?",
                                             "How many employees does {name} have?"), _count(15, 9500)),
        "founder": Attribute("Founder", ("Who founded {name}?", "Who is the founder of {name}?"), _person),
        "product": Attribute("Main product", ("What does {name} mainly make?",
                                              "What is the main product of {name}?"), _one_of(PRODUCTS)),
        "colour": Attribute("Logo colour", ("What colour is the logo of {name}?",), _one_of(COLOURS)),
    }),
    "town": Kind("Town", (), {
        "founded": Attribute("Founded", ("In what year was {name} founded?", "When was {name} founded?"),
                             _year(1100, 1950)),
        "river": Attribute("River", ("On which river does {name} stand?", "Which river flows through {name}?"),
                           _place),
        "population": Attribute("Population", ("How many people live in {name}?",
                                                "What is the population of {name}?"), _count(200, 95000)),
        "mayor": Attribute("Mayor", ("Who is the mayor of {name}?",), _person),
        "export": Attribute("Main export", ("What is the main export of {name}?",
                                            "What does {name} mainly export?"), _one_of(GOODS)),
        "colour": Attribute("Flag colour", ("What colour is the flag of {name}?",), _one_of(COLOURS)),
    }),
    "ship": Kind("Ship", (), {
        "launched": Attribute("Launched", ("In what year was the {name} launched?", "When was the {name} launched?"),
                              _year(1850, 2015)),
        "port": Attribute("Home port", ("What is the home port of the {name}?", "Which port is the {name} from?"),
                          _place),
        "crew": Attribute("Crew", ("How many crew members does the {name} have?",
                                   "How large is the crew of the {name}?"), _count(8, 900)),
        "captain": Attribute("Captain", ("Who is the captain of the {name}?", "Who commands the {name}?"), _person),
        "cargo": Attribute("Cargo", ("What cargo does the {name} carry?", "What does the {name} carry?"),
                           _one_of(GOODS)),
        "colour": Attribute("Hull colour", ("What colour is the hull of the {name}?",), _one_of(COLOURS)),
    }),
}
VALUE_WORDS = frozenset(COLOURS + PRODUCTS + GOODS)

# Words that a reply says without stating a value, even capitalised (sentence starts, the sheet's own labels).
_COMMON = frozenset("""
    a about above according after again all also although am an and answer answers any anything are as at based
    be because been below but by can cannot certainly could data definitely did do does either fact facts for from
    given good had has have he hello her here hi his hope how however i if in info information is it its just know
    let like listed maybe me my name no none not note nothing of ok okay on only or our perhaps please possibly
    probably provided question regarding say says sheet she so sorry still sure text thank thanks that the their
    them then there these they this those though to unclear unfortunately unknown value was we well were what
    when where whether which while who whom whose why will with would yes yet you your
    company town ship founded headquarters employees founder main product logo colour color river population mayor
    export flag launched home port crew captain cargo hull works trading mills foundry
    """.split())


def _sheet_text(kind: Kind, entity: str, sheet: dict[str, str]) -> str:
  lines = [f"{kind.label}: {entity}", *(f"{kind.attributes[a].label}: {v}" for a, v in sheet.items())]
  return "\n".join(["---", *lines, "---"])


def make_question(rng: random.Random, answerable: bool) -> dict:
  """One question: {'prompt', 'kind', 'entity', 'sheet' {attribute: value}, 'attribute', 'question',
  'answerable', 'answer'}; the answer is the value, or ABSTENTION when the sheet does not hold the attribute."""
  kind_id = rng.choice(tuple(KINDS))
  kind = KINDS[kind_id]
  used: set[str] = set()
  entity = _invented_word(rng, used)
  if kind.suffixes:
    entity = f"{entity} {rng.choice(kind.suffixes)}"
  names = tuple(kind.attributes)
  on_sheet = rng.sample(names, rng.randint(3, 4))
  attribute = rng.choice(on_sheet if answerable else [a for a in names if a not in on_sheet])
  sheet = {a: kind.attributes[a].draw(rng, used) for a in on_sheet}
  question = rng.choice(kind.attributes[attribute].questions).format(name=entity)
  prompt = f"Fact sheet:\n{_sheet_text(kind, entity, sheet)}\nQuestion: {question}\n{INSTRUCTION}"
  return {"prompt": prompt, "kind": kind_id, "entity": entity, "sheet": sheet, "attribute": attribute,
          "question": question, "answerable": answerable, "answer": sheet[attribute] if answerable else ABSTENTION}


def make_questions(n: int, seed: int) -> list[dict]:
  """n questions, the same for the same seed; n // 2 of them unanswerable, in a seeded order."""
  if n < 0:
    raise ValueError(f"expected a number of questions >= 0, got {n}")
  rng = random.Random(f"itjax-grounded:{seed}")
  answerable = [i % 2 == 0 for i in range(n)]
  rng.shuffle(answerable)
  return [make_question(rng, a) for a in answerable]


# --- recognising abstentions and values ---------------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
_NEGATED = re.compile(r"\b(does|do|did|is|are|was|were|has|have|had|could|would|should|must|need)n'?t\b", re.I)
_CANNOT = re.compile(r"\b(?:can'?t|cannot)\b", re.I)
_WONT = re.compile(r"\bwon'?t\b", re.I)
_NOT_APPLICABLE = re.compile(r"\bn/a\b", re.I)
_THOUSANDS = re.compile(r"(?<=\d)[,.'\u00a0\u202f](?=\d{3}(?!\d))")

_SOURCE = r"(?:the |this |that )?(?:fact )?(?:sheet|text|list|document|context|table|card)"
_ABSTENTIONS = {  # checked in this order; the first class that matches names the abstention
    "insufficient": (
        r"\b(?:not|no|nor) (?:\w+ ){0,3}enough (?:information|info|data|details?|context|facts)\b",
        r"\binsufficient\b",
        r"\b(?:lacks?|lacking) (?:the |any |enough )?(?:information|info|data|details?)\b",
    ),
    "not_stated": (
        r"\b(?:does|do|did) not (?:\w+ )?(?:say|mention|list|state|give|specify|include|contain|provide|tell|show|"
        r"indicate|name|record|reveal|cover)\b",
        r"\bnot (?:\w+ )?(?:stated|given|provided|specified|mentioned|listed|included|shown|indicated|named|"
        r"recorded|available|present|found|said|noted|disclosed)\b",
        rf"\bnot (?:\w+ )?(?:on|in|part of) {_SOURCE}\b",
        rf"\b{_SOURCE} (?:\w+ ){{0,2}}(?:does|do|did) not (?:\w+ )?(?:have|hold)\b",
        r"\bno (?:\w+ )?(?:information|info|data|details?|mention|record|entry|value)\b",
        r"\bnothing (?:\w+ )?(?:about|on|regarding|is said|is stated|is given)\b",
        r"\b(?:missing|absent) from\b",
        r"\bsilent (?:on|about)\b",
    ),
    "cannot_tell": (
        r"\b(?:can not|could not|unable to|not able to|impossible to|no way to|not possible to) (?:\w+ )?"
        r"(?:determine|tell|say|know|answer|find|infer|work out|figure out|deduce|confirm|identify|provide|give|"
        r"state|be determined|be answered|be known|be found|be told|be said)\b",
        r"\bunclear\b",
        r"\bnot clear\b",
    ),
    "unknown": (
        r"\bunknown\b",
        r"\bnot known\b",
        r"\b(?:do|does|did) not know\b",
        r"\bno idea\b",
        r"\b(?:nobody|no one) knows\b",
        r"\bnot sure\b",
        r"\bunsure\b",
        r"\bidk\b",
    ),
}
_ABSTENTION_RES = {name: re.compile("|".join(patterns)) for name, patterns in _ABSTENTIONS.items()}

# Clause boundaries: sentence ends, brackets and colons, commas outside numbers, dashes, contrasts, and the point
# before a guess ("..., but probably 1950" leaves "probably 1950" a clause of its own).
_GUESS = r"probably|maybe|perhaps|possibly|likely|presumably|i think|i guess|i believe|i suppose|my guess|" \
         r"could be|might be"
_CLAUSE_BREAK = re.compile(rf"[.!?](?=\s|$)|[;:()\[\]\n]|,(?!\d)|\s[-\u2013\u2014]+\s|"
                           rf"\b(?:but|however|though|although|yet|whereas|except)\b|(?=\b(?:{_GUESS})\b)", re.I)
_CONDITIONAL = re.compile(r"^\W*(?:if|unless|whether|in case)\b", re.I)


def _spell_out(text: str) -> str:
  """Straight apostrophes and contractions spelled out (doesn't -> does not, can't -> can not), case kept."""
  text = _NOT_APPLICABLE.sub("not available", text.translate(_APOSTROPHES))
  text = _NEGATED.sub(r"\1 not", text)
  return _WONT.sub("will not", _CANNOT.sub("can not", text))


def _plain(text: str) -> str:
  """Lowercase words and numbers separated by single spaces: contractions spelled out, thousands separators and
  punctuation dropped ("The Crew: 1,200!" -> "the crew 1200")."""
  return " ".join(re.findall(r"[a-z0-9]+", _THOUSANDS.sub("", _spell_out(text).lower())))


def clauses(text: str) -> list[str]:
  """The response's clauses (see _CLAUSE_BREAK), contractions spelled out, empty ones dropped."""
  return [c.strip() for c in _CLAUSE_BREAK.split(_spell_out(text)) if c and c.strip()]


def _class_of(plain: str) -> str | None:
  return next((name for name, pattern in _ABSTENTION_RES.items() if pattern.search(plain)), None)


def abstention_class(text: str) -> str | None:
  """'not_stated', 'insufficient', 'cannot_tell' or 'unknown' when `text` abstains, else None.

  Conditional clauses ("if the sheet does not say, ...") abstain from nothing and are left out. Case, punctuation
  and contractions with or without an apostrophe (doesn't, doesnt, can't, cannot) do not matter."""
  if not isinstance(text, str):
    return None
  kept = [c for c in clauses(text) if not _CONDITIONAL.match(c)]
  return next((found for found in map(_class_of, map(_plain, kept)) if found), None) or _class_of(
      _plain(" ".join(kept)))


def _clause_values(clause: str, known: set[str]) -> list[str]:
  """Value-like tokens of one clause that `known` (the question's words) lacks: numbers, capitalised words that
  are not common words, and words of the value vocabularies (colours, products, goods)."""
  flat = _THOUSANDS.sub("", clause)
  found = re.findall(r"\d+", flat)
  for word in re.findall(r"[A-Za-z]+", flat):
    lower = word.lower()
    named = word[0].isupper() and any(c.islower() for c in word[1:]) and lower not in _COMMON
    if named or lower in VALUE_WORDS:
      found.append(word)
  return [v for v in found if v.lower() not in known]


def values_given(response: str, question: str = "") -> list[str]:
  """The value-like tokens a response states outside its abstaining clauses, less the question's own words.

  Without the question (verify() has none) a capitalised name the question holds, such as the entity's, counts too
  when it stands outside an abstaining clause."""
  known = set(_plain(question).split())
  return [v for c in clauses(response) if abstention_class(c) is None for v in _clause_values(c, known)]


def judge(response: str | None, record: dict) -> str:
  """The label of `response` to a question record ('answerable', 'answer' and, optionally, 'question'):

    empty       the response holds no letter or digit (None too).
    correct     answerable, and the whole value appears, as whole words, in a clause that does not abstain.
    partial     answerable, the value has several words and one of them appears so ("Kolvey" for "Marta Kolvey").
    abstained   the response abstains (abstention_class) and gives no value: values_given() is empty.
    wrong       answerable, and none of the above (another value, or anything else).
    fabricated  unanswerable, and the response does not abstain or gives a value besides abstaining.

  A response that both abstains and gives a value is judged by the value: "The sheet does not say, but it is
  probably 1950" is fabricated for an unanswerable question (a hedged guess is still a value) and wrong for an
  answerable one unless 1950 is the answer, which makes it correct. Values are numbers, capitalised names and
  words of the value vocabularies that the question does not hold; names inside an abstaining clause ("the sheet
  does not say who founded Velmo Works") do not count. Matching is case-insensitive and ignores punctuation and
  thousands separators ("1,200" states 1200); stating the right value beside one other value is still correct, but
  beside two or more of the sheet's other values it is `wrong`: reciting the sheet does not say which value answers.
  """
  text = response if isinstance(response, str) else ""
  if not re.search(r"[A-Za-z0-9]", text):
    return "empty"
  abstains = abstention_class(text) is not None
  given = values_given(text, record.get("question") or "")
  if not record["answerable"]:
    return "abstained" if abstains and not given else "fabricated"
  said = f" {' '.join(_plain(c) for c in clauses(text) if abstention_class(c) is None)} "
  value = _plain(str(record["answer"]))
  if value and f" {value} " in said:
    others = [v for v in map(_plain, _other_values(record)) if v and v != value and f" {v} " in said]
    return "wrong" if len(others) >= 2 else "correct"
  parts = value.split()
  if len(parts) > 1 and any(f" {p} " in said for p in parts if len(p) > 1):
    return "partial"
  return "abstained" if abstains and not given else "wrong"


def _other_values(record: dict) -> list[str]:
  """The sheet's values besides the entity's name: from the record's 'sheet', else read from the lines of the
  sheet block in its 'question' (a task record's verifier holds the whole prompt)."""
  if isinstance(record.get("sheet"), dict):
    return [str(v) for v in record["sheet"].values()]
  block = re.search(r"^---\n(.*?)\n---$", record.get("question") or "", re.S | re.M)
  lines = block.group(1).splitlines()[1:] if block else []  # the first line names the entity
  return [line.split(":", 1)[1].strip() for line in lines if ":" in line]


def passes(response: str | None, record: dict) -> bool:
  """Whether the response is what the question asks for: the value (correct) or, unanswerable, an abstention."""
  return judge(response, record) == ("correct" if record["answerable"] else "abstained")
