#!/usr/bin/env bash
# One GPU host: installs itjax with CUDA JAX into .venv (once; again only when pyproject.toml changes), checks that
# JAX sees the GPU, then runs the command from the repository root.
#   launch/gpu.sh .venv/bin/itjax train --config configs/llama31_8b_lora.py --workdir runs/llama
#   launch/gpu.sh .venv/bin/itjax sweep experiments/updates_vs_retention.py
#   launch/gpu.sh --dry_run CMD...         # print what it would run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
DRY=0
if [ "${1:-}" = --dry_run ]; then DRY=1; shift; fi
[ $# -gt 0 ] || { echo "usage: launch/gpu.sh [--dry_run] COMMAND..." >&2; exit 2; }

stamp="$VENV/.installed-gpu"
want=$(sha256sum pyproject.toml | cut -c1-16)
install=("$VENV/bin/python" -m pip install --disable-pip-version-check -e ".[gpu]")  # CUDA 12 JAX (pyproject.toml)
check=("$VENV/bin/python" -c "import jax; d = jax.devices(); assert d[0].platform == 'gpu', d; print('JAX:', d)")
if [ $DRY = 1 ]; then
  [ -x "$VENV/bin/python" ] || echo "$PY -m venv $VENV"
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] || echo "${install[*]}"
  echo "${check[*]}"
  echo "$*"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing itjax with CUDA JAX into $VENV (log: $VENV/install-gpu.log) ..." >&2
  "${install[@]}" > "$VENV/install-gpu.log" 2>&1 || { tail -n 30 "$VENV/install-gpu.log" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
"${check[@]}" || { echo "launch/gpu.sh: JAX sees no GPU (driver, CUDA_VISIBLE_DEVICES?)" >&2; exit 1; }
exec "$@"
