"""General prompts for self-replay (`itjax distill --self --prompts general`), drawn from template pools, seeded.

Four kinds, each a few phrasings filled from small subject lists written for this project: questions of fact,
short writing, explanations for a named audience, and everyday advice. Every combination is a distinct prompt;
`general_prompts(n, seed)` shuffles them with the seed, interleaves the kinds, and returns the first n.
"""

from __future__ import annotations

import itertools
import random

FACT_FORMS = ("What is {}?", "Give three facts about {}.", "Where does {} come from, briefly?",
              "In two sentences, why does {} matter?")
FACT_SUBJECTS = ("the water cycle", "the Moon", "honey", "the human heart", "volcanoes", "the printing press",
                 "photosynthesis", "coffee", "the Pacific Ocean", "the Roman alphabet", "glass", "rainbows",
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
EXPLAIN_CONCEPTS = ("how a fridge keeps food cold", "what interest on a loan is", "why the sky is blue",
                    "how vaccines work", "what a computer program is", "why leaves change colour",
                    "how a map scale works", "what inflation means", "how sound travels")
AUDIENCES = ("a ten-year-old", "a busy adult", "someone new to the subject", "a grandparent")
ADVICE_FORMS = ("How can I {}?", "Give me three tips to {}.", "What is a good first step to {}?")
ADVICE_GOALS = ("sleep better", "save money on groceries", "keep houseplants alive", "learn a new language",
                "stay focused while studying", "prepare for a job interview", "cook more at home",
                "make a small flat feel bigger", "start running", "remember people's names",
                "write a polite complaint", "pack light for a trip", "keep a tidy desk", "reduce screen time",
                "drink more water", "stop putting things off")


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


def all_general_prompts() -> list[list[str]]:
  """Every prompt, one list per kind (facts, writing, explanations, advice), in a fixed order."""
  return [_facts(), _writing(), _explanations(), _advice()]


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
