"""Evaluations of a model on the data path's outputs: loss on a split, and verified accuracy on generated tasks."""

from __future__ import annotations

import dataclasses
import json

from itjax.data.tasks import verify


@dataclasses.dataclass
class TaskResult:
  accuracy: float
  responses: list[str]
  passed: list[bool]


def read_tasks(path: str, limit: int | None = None) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    records = [json.loads(line) for line in f if line.strip()]
  return records[:limit] if limit else records


def task_accuracy(config, params, tokenizer, records: list[dict], max_new_tokens: int = 96, batch_size: int = 16,
                  template: str | None = None, progress: bool = True) -> TaskResult:
  """Greedy answers to each task's instruction, checked by the task's own verifier."""
  from itjax.generate import Generator, Sampling, generate_texts
  generator = Generator(config, params, tokenizer.eos_ids, tokenizer.pad_id)
  prompts = [tokenizer.encode_chat(r["messages"][:-1], add_generation_prompt=True, template=template)
             for r in records]
  responses = generate_texts(generator, tokenizer, prompts, max_new_tokens, Sampling(), batch_size,
                             progress=progress)
  passed = [verify(text, r["verifier"]) for text, r in zip(responses, records)]
  return TaskResult(sum(passed) / max(1, len(passed)), responses, passed)
