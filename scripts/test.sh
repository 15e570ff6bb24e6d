#!/usr/bin/env bash
# Run the test-suite (offline). Extra arguments go to pytest, e.g. `bash scripts/test.sh -k reward`
# or `bash scripts/test.sh tests/test_evaluate.py` (test files given: only those run; none given:
# pyproject's testpaths, i.e. tests/).
#   bash scripts/test.sh            everything CI's default lane runs (add -m "not vllm" outside the vLLM lane)
#   bash scripts/test.sh --fast     the fast lane (<= 90 s on 2 idle cores): no verl trainers, no Ray,
#                                   no subprocess trainers, no warm-up model; markers e2e, slow, vllm excluded
# Exit status: pytest's, except that "no tests collected" (5) counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${RFTT_VENV:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
args=()
if [ "${1:-}" = "--fast" ]; then
  shift
  args=(-m "not e2e and not slow and not vllm")
fi
"$VENV/bin/python" -m pytest -q --timeout=900 ${args[@]+"${args[@]}"} "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
