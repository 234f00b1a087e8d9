"""General prompts for self-replay (`itjax distill --self --prompts general`), drawn from template pools, seeded.

Five kinds, each a few phrasings filled from small subject lists written for this project: questions of fact,
short writing, explanations for a named audience, everyday advice, and quick questions with a short answer (small
word problems and conversions, opposites, plurals, letters, comparisons). Every combination is a distinct prompt;
`general_prompts(n, seed)` shuffles them with the seed, interleaves the kinds, and returns the first n.

Quick questions matter for replay: a model tuned on tasks that demand a bare value starts answering every short
question with a bare value, and a small model loses the working it needed to get it right. None of them is worded
like the forgetting suite's probes (itjax.evals.forgetting), and a test keeps it so.
"""

from __future__ import annotations

import itertools
import random

FACT_FORMS = ("What is {}?", "Give three facts about {}.", "Where does {} come from, briefly?",
              "In two sentences, why does {} matter?")
FACT_SUBJECTS = ("the water cycle", "the Moon", "honey", "the human heart", "volcanoes", "the printing press",
                 "earthquakes", "coffee", "the Pacific Ocean", "the Roman alphabet", "glass", "rainbows",
                 "the bicycle", "tides", "bamboo", "the metric system", "penguins", "paper money",
                 "the compass", "salt")
WRITING_FORMS = ("Write a short poem about {}.", "Write a two-sentence story about {}.",
                 "Write a friendly note to a neighbour about {}.", "Write a product description for {}.",
                 "Write a haiku about {}.")
WRITING_SUBJECTS = ("a rainy morning", "a lost umbrella", "an old bookshop", "a garden in spring",
                    "a train leaving at night", "a cat on a windowsill", "a new pair of shoes", "the first snow",
                    "a kitchen timer", "a broken clock", "a village bakery", "a kite on the beach",
                    "a paper boat")
EXPLAIN_FORMS = ("Explain {} to {}.", "How would you describe {} to {}?", "Give {} a simple explanation of {}.")
EXPLAIN_CONCEPTS = ("how a fridge keeps food cold", "what interest on a loan is", "why the sea is salty",
                    "how vaccines work", "what a search engine does", "why bread rises",
                    "how a map scale works", "what inflation means", "how sound travels")
AUDIENCES = ("a ten-year-old", "a busy adult", "someone new to the subject", "a grandparent")
ADVICE_FORMS = ("How can I {}?", "Give me three tips to {}.", "What is a good first step to {}?")
ADVICE_GOALS = ("wake up earlier", "save money on groceries", "keep houseplants alive", "learn a new language",
                "stay focused while studying", "prepare for a job interview", "cook more at home",
                "make a small flat feel bigger", "start running", "remember people's names",
                "write a polite complaint", "plan a weekly budget", "keep a tidy desk", "reduce screen time",
                "walk more each day", "stop putting things off")
QUICK_STORIES = ("I have {a} {thing}s and buy {b} more. How many {thing}s do I have now?",
                 "A box holds {a} {thing}s. How many {thing}s are in {b} full boxes?",
                 "There were {c} {thing}s on the table and {a} were taken away. How many are left?")
QUICK_CONVERSIONS = (("years", "months"), ("dollars", "cents"), ("dozens", "eggs"), ("litres", "millilitres"),
                     ("feet", "inches"))  # none of the probes' or the tasks' units
QUICK_THINGS = ("apple", "pencil", "marble", "cookie", "stamp", "button", "shell", "card")
QUICK_WORDS = (("What is the opposite of '{}'?", ("hot", "early", "empty", "loud", "narrow", "ancient", "rough",
                                                 "polite", "heavy", "bright")),
               ("What is the plural of '{}'?", ("mouse", "child", "leaf", "tooth", "cactus", "sheep", "knife",
                                               "person", "goose", "potato")),
               ("Which is heavier, {}?", ("a feather or a brick", "an elephant or a dog", "a car or a bicycle",
                                         "a grape or a melon", "a book or a sheet of paper")),
               ("Is {} a fruit or a vegetable?", ("a carrot", "a banana", "a tomato", "spinach", "a cherry")),
               ("What is the last letter of the word '{}'?", ("pillow", "bottle", "carpet", "pocket", "sofa",
                                                              "ticket", "bread", "chair", "stone", "ribbon")),
               ("Which letter comes after '{}' in the alphabet?", ("b", "f", "k", "p", "t")),
               ("Which comes first in alphabetical order, {}?", ("'pasta' or 'bread'", "'chair' or 'table'",
                                                                 "'ship' or 'boat'", "'soup' or 'salad'",
                                                                 "'night' or 'morning'")),
               ("What do you call {}?", ("a baby cat", "a baby dog", "a group of fish", "a person who fixes "
                                        "teeth", "a place where bread is baked")))


def _facts() -> list[str]:
  return [form.format(s) for form, s in itertools.product(FACT_FORMS, FACT_SUBJECTS)]


def _writing() -> list[str]:
  return [form.format(s) for form, s in itertools.product(WRITING_FORMS, WRITING_SUBJECTS)]


def _explanations() -> list[str]:
  prompts = []
  for form, concept, audience in itertools.product(EXPLAIN_FORMS, EXPLAIN_CONCEPTS, AUDIENCES):
    first, second = (audience, concept) if form.startswith("Give") else (concept, audience)
    prompts.append(form.format(first, second))
  return prompts


def _advice() -> list[str]:
  return [form.format(goal) for form, goal in itertools.product(ADVICE_FORMS, ADVICE_GOALS)]


def _quick() -> list[str]:
  rng = random.Random("itjax-general-prompts:quick")  # the numbers are part of the pool: fixed, not seeded
  prompts = []
  for form, thing in itertools.product(QUICK_STORIES, QUICK_THINGS):
    for _ in range(3):
      a, b = rng.randint(2, 12), rng.randint(2, 9)
      prompts.append(form.format(a=a, b=b, c=a + rng.randint(1, 15), thing=thing))
  for big, small in QUICK_CONVERSIONS:
    for a in rng.sample(range(2, 10), 3):
      prompts.append(f"How many {small} make {a} {big}?")
  prompts += [form.format(w) for form, words in QUICK_WORDS for w in words]
  return prompts


def all_general_prompts() -> list[list[str]]:
  """Every prompt, one list per kind (facts, writing, explanations, advice, quick), in a fixed order."""
  return [_facts(), _writing(), _explanations(), _advice(), _quick()]


def general_prompts(n: int | None = None, seed: int = 0) -> list[str]:
  """n distinct prompts (all of them when n is None), each kind shuffled by `seed` and the kinds interleaved."""
  rng = random.Random(f"itjax-general-prompts:{seed}")
  kinds = []
  for kind in all_general_prompts():
    kind = list(kind)
    rng.shuffle(kind)
    kinds.append(kind)
  mixed = [p for row in itertools.zip_longest(*kinds) for p in row if p is not None]
  return mixed if n is None else mixed[:n]
