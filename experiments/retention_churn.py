"""Is a retention figure forgetting, or churn? Scores a trained workdir's adapters against adapters that learned nothing.

  .venv/bin/python experiments/retention_churn.py runs/replay_weight/w0.15_seed0 [more workdirs] [--out DIR]

For each workdir the forgetting suite (the demo's settings: 96 probes, 24 general prompts, greedy) scores the merged
model with its adapters as trained, at half scale, and permuted: every LoRA B with its own entries shuffled (the same
values and norm, in random places, so the update has the trained size and no learned direction). If the permuted
adapters, which barely move the model (KL to the base on general answers near 0), lose as many of the base's right
probes as the trained ones, retention is measuring how many answers flip under any small change of the weights, not
what training took away. Writes DIR/retention_churn.md and .png (default: runs/retention_churn).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from itjax.model import lora
from itjax.interop.checkpoint import lora_spec
from itjax.evals import forgetting
from itjax.evals import text as general_text
from itjax.evals.subject import Settings, Subject
from itjax.interop.loading import load_trained

VARIANTS = (("trained", 1.0), ("trained", 0.5), ("permuted", 1.0))
COLUMNS = ("kl_general", "model_correct", "retention", "lost_probes", "gained_probes", "net_loss_p",
           "degenerate_rate")


def adapters(trained: dict, kind: str, scale: float, rng: np.random.Generator) -> dict:
  out = {}
  for key, value in lora.flatten(trained).items():
    value = np.asarray(value)
    if key.endswith("/lora_b"):
      value = value * scale
      if kind == "permuted":
        value = rng.permutation(value.reshape(-1)).reshape(value.shape)
    out[key] = value
  return lora.unflatten(out)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("workdirs", nargs="+")
  ap.add_argument("--out", default="runs/retention_churn")
  args = ap.parse_args()
  settings = Settings(max_new_tokens=96, batch_size=32, limit=6)
  text = forgetting.read_text(general_text.default_path(), 65536)
  probes = forgetting.make_probes(96, 0)
  rows, base_cache, rng = [], {}, np.random.default_rng(0)
  for workdir in args.workdirs:
    model, trained, meta = load_trained(workdir)
    base = Subject("base", model.config, model.params, model.tokenizer)
    for kind, scale in VARIANTS:
      joined = lora.join(adapters(trained, kind, scale, rng), model.params)
      config, merged = lora.merge_adapters(model.config.replace(lora=lora_spec(meta)), joined)
      out = forgetting.evaluate(Subject("model", config, merged, model.tokenizer), base, None, settings, text,
                                probes, base_cache, n_general=24)
      rows.append({"workdir": os.path.basename(os.path.normpath(workdir)), "adapters": f"{kind} x{scale:g}",
                   **{k: out["model"].metrics[k] for k in COLUMNS},
                   "base_correct": out["model"].metrics["base_correct"],
                   "base_degenerate": out["base"].metrics["degenerate_rate"]})
      print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()),
            flush=True)
  os.makedirs(args.out, exist_ok=True)
  lines = ["| workdir | adapters | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
  lines += [f"| {r['workdir']} | {r['adapters']} | " + " | ".join(f"{r[k]:.3g}" for k in COLUMNS) + " |"
            for r in rows]
  lines.append(f"\nbase: {rows[0]['base_correct']:.1f}% of {len(probes)} probes right, "
               f"degenerate_rate {rows[0]['base_degenerate']:.1f}")
  with open(os.path.join(args.out, "retention_churn.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for label in dict.fromkeys(r["adapters"] for r in rows):
    picked = [r for r in rows if r["adapters"] == label]
    ax.scatter([r["kl_general"] for r in picked], [r["retention"] for r in picked], label=label)
  ax.set_xlabel("KL(base || model) on general answers, nats/token")
  ax.set_ylabel("retention (% of the base's right probes)")
  ax.axhline(90, color="grey", linestyle="--", linewidth=1)
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, "retention_churn.png"), dpi=120)
  print(f"wrote {os.path.join(args.out, 'retention_churn.md')} and .png")


if __name__ == "__main__":
  main()
