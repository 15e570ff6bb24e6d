#!/usr/bin/env bash
# Run the test-suite (offline). Extra arguments go to pytest, e.g. `bash scripts/test.sh -k reward`.
# Exit status: pytest's, except that "no tests collected" (5) counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${RFTT_VENV:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
"$VENV/bin/python" -m pytest -q --timeout=900 tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
