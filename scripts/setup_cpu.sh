#!/usr/bin/env bash
# Set up rftt-plugin on a CPU-only machine: a venv (default .venv), CPU torch 2.13.0, verl 0.9.1
# with the verl-core/math/test extras, and this package. Uses pip only: uv/poetry would resolve a
# CUDA build of torch. Re-running is cheap (pip skips what is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RFTT_VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "[setup] installing CPU torch + verl (a few minutes on a fresh machine)"
"$VENV/bin/pip" install -q --disable-pip-version-check -r requirements-cpu.txt 2> >(grep -v "^WARNING: Location" >&2)
echo "[setup] installing rftt-plugin"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e . 2> >(grep -v "^WARNING: Location" >&2)
n_cuda=$("$VENV/bin/pip" list 2>/dev/null | grep -ci 'nvidia\|triton' || true)
if [ "$n_cuda" != "0" ]; then
  echo "[setup] WARNING: $n_cuda CUDA packages in $VENV; on a CPU machine torch must be the 2.13.0 CPU build" >&2
fi
"$VENV/bin/python" -c "import torch, verl; print(f'[setup] ok: torch {torch.__version__}, verl {verl.__version__}')"
