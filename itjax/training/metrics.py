"""Training metrics: WORKDIR/metrics.jsonl (one JSON object per line), TensorBoard events, plots, and MFU.

FLOPs of one training token (the MFU numerator), counting multiply-adds as 2 FLOPs:
  forward                      2 * N    N = params used in matmuls (projections, LoRA adapters, output head;
                                          the embedding lookup is free unless tied to the head)
  backward, activation grads   2 * N    needed through every layer, frozen or not
  backward, weight grads       2 * Nt   Nt = trainable params among them (all of N in full fine-tuning)
  attention (scores, values)   12 * L * T * (heads * head_dim)   forward 4x, backward 8x; T = row length,
                                          no causal discount (as in the PaLM paper's MFU)
So full fine-tuning costs about 6N per token and LoRA about 4N.
"""

from __future__ import annotations

import json
import os
import sys

import jax

from itjax.io import atomic, distributed
from itjax.model.lora import flatten
from itjax.model.config import ModelConfig
from itjax.training import plots
from itjax.training.plots import is_percent  # noqa: F401 (also imported from here)

# Dense bf16 peak FLOP/s per chip, from the vendors' data sheets.
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12,
              "NVIDIA A100": 312e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12}
_MATMUL_LEAVES = ("kernel", "lora_a", "lora_b", "lm_head")


def matmul_params(config: ModelConfig, shapes: dict, trainable: set[str] | None = None) -> int:
  """Params used in matmuls (of the `trainable` paths only, if given)."""
  total = 0
  for path, s in flatten(shapes).items():
    name = path.rsplit("/", 1)[-1]
    if name in _MATMUL_LEAVES or (name == "embedding" and config.tie_embeddings):
      if trainable is None or path in trainable:
        total += int(s.size)
  return total


def train_flops_per_token(config: ModelConfig, shapes: dict, trainable: set[str], seq_len: int) -> float:
  """Model FLOPs of a training step per token (the usual count: the vocabulary projection at every position). The
  step skips that projection where no loss is taken, so with a prompt mask it does fewer FLOPs than this counts,
  and MFU and TFLOP/s read as model FLOPs per second, not as work the device did."""
  n, nt = matmul_params(config, shapes), matmul_params(config, shapes, trainable)
  attention = 12 * config.num_layers * seq_len * config.num_heads * config.head_dim
  return 4.0 * n + 2.0 * nt + attention


def peak_flops(configured: float = 0.0) -> float | None:
  """Peak FLOP/s of all devices: the configured per-device figure, or a known accelerator's; None on CPU."""
  devices = jax.devices()
  if configured > 0:
    return configured * len(devices)
  kind = devices[0].device_kind
  for name, flops in PEAK_FLOPS.items():
    if kind.startswith(name):
      return flops * len(devices)
  return None


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch: tensorboardX imports torch whenever it is installed (only
  to accept torch tensors, which itjax never passes), and that import costs seconds at every run's start."""
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX handles
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class MetricsWriter:
  """Appends to WORKDIR/metrics.jsonl and TensorBoard; on resume, lines after the restored step are dropped."""

  def __init__(self, workdir: str, resume_step: int | None = None):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.file = self.tb = None
    if not distributed.primary():  # one process writes; the others compute the same figures
      return
    if resume_step is not None and os.path.exists(self.path):
      keep = []
      with open(self.path, "rb") as f:
        for line in f:
          try:
            record = json.loads(line)
          except ValueError:  # the line a killed run was writing: it ends the file, and is written again
            break
          if record["step"] <= resume_step:
            keep.append(line.decode().rstrip("\n") + "\n")
      atomic.write_text(self.path, lambda f: f.writelines(keep))  # a kill now leaves the old file or the new
    elif resume_step is None and os.path.exists(self.path):
      os.remove(self.path)
    self.file = open(self.path, "a")
    SummaryWriter = _summary_writer_class()
    # On resume, TensorBoard hides what the earlier run logged after the checkpoint: the steps run again.
    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                            purge_step=None if resume_step is None else resume_step + 1)

  def write(self, step: int, metrics: dict) -> None:
    record = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}}
    if self.file is not None:
      self.file.write(json.dumps(record) + "\n")
      self.file.flush()
      for k, v in metrics.items():
        if isinstance(v, (int, float)):
          self.tb.add_scalar(k, v, step)
      self.tb.flush()

  def close(self) -> None:
    if self.file is not None:
      self.file.close()
      self.tb.close()


def plot_losses(workdir: str) -> str | None:
  """WORKDIR/loss.png (training and validation loss against the step) and, when the run evaluated generation suites,
  WORKDIR/evals.png (their metrics, a panel per suite and unit); returns loss.png's path. See itjax.training.plots."""
  return plots.plot_losses(workdir)
