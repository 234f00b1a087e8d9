"""Training metrics: WORKDIR/metrics.jsonl (one JSON object per line), TensorBoard events, a loss plot, and MFU.

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
  to accept torch tensors, which itjax never passes), and that import alone took 1.9 s of every run's start."""
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


def is_percent(key: str) -> bool:
  """Whether eval/SUITE/METRIC is a headline percentage (loss.png plots these on one axis): not a per-type or
  per-perturbation breakdown (a further '/'), a count (n_*), a mean length (mean_*) or one of the forgetting
  suite's other units (forgetting.NOT_PERCENT, beside their definitions)."""
  from itjax.evals.forgetting import NOT_PERCENT
  parts = key.split("/")
  return (len(parts) == 3 and parts[0] == "eval" and not parts[2].startswith(("n_", "mean_"))
          and not (parts[1] == "forgetting" and parts[2] in NOT_PERCENT))


def plot_losses(workdir: str) -> str | None:
  """WORKDIR/loss.png: training and validation loss against the step, and the generation suites' metrics."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  curves = sorted({k for r in records for k in r if is_percent(k)})  # generation suites' headline percentages
  fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(13 if curves else 7, 4), squeeze=False)
  ax = axes[0, 0]
  if curves:
    for key in curves:
      points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
      axes[0, 1].plot(*zip(*points), "o-", label=key[len("eval/"):])
    axes[0, 1].set_xlabel("step")
    axes[0, 1].set_ylabel("percent")
    axes[0, 1].grid(alpha=0.3)
    axes[0, 1].legend(fontsize=8)
  for key, style in (("loss", "-"), ("eval_loss", "o-")):
    points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    if points:
      ax.plot(*zip(*points), style, label={"loss": "train", "eval_loss": "validation"}[key])
  ax.set_xlabel("step")
  ax.set_ylabel("loss (nats per target token)")
  ax.grid(alpha=0.3)
  ax.legend()
  out = os.path.join(workdir, "loss.png")
  fig.savefig(out, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return out
