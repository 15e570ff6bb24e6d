#!/usr/bin/env bash
# CPU quickstart: set everything up on a fresh machine, check the wiring, then run the whole RFTT
# pipeline at toy scale, for real, offline (docs/quickstart-results.md gives the measured stage times):
# tiny model -> rftt prepare-model -> four-digit sums (digits 1-5) in functional tokens (phase-1 samples that
# mirror gen-sft, 250 held-out questions) -> phase-1 SFT with verl's SFT trainer (+recipe=rftt_sft)
# -> rftt eval (chain + tree) -> phase-2 RL with verl's main_ppo (+recipe=rftt +dryrun=cpu) -> rftt
# eval again -> table with 95% intervals, reward_curve.png, tree.html. Each stage prints progress.
# Extra arguments go to `rftt quickstart` (e.g. --compare-chain, --seeds 3).
# Re-running resumes: finished stages in the output directory are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_cpu.sh
VENV=${RFTT_VENV:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
echo "== rftt doctor =="
"$VENV/bin/rftt" doctor --no-ray
echo "== rftt quickstart =="
"$VENV/bin/rftt" quickstart --out "${OUT:-runs/quickstart}" "$@"
