#!/usr/bin/env bash
# CPU quickstart: set everything up on a fresh machine and run the main job on the CPU default.
# Today that is: setup -> `rftt doctor` -> the composed +recipe=rftt config. The end-to-end toy
# pipeline (prepare -> SFT -> RL -> eval) is not built yet: see README "Status".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_cpu.sh
VENV=${RFTT_VENV:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
echo "== rftt doctor =="
"$VENV/bin/rftt" doctor --no-ray
echo "== python -m verl.trainer.main_ppo +recipe=rftt --cfg job (the RFTT-specific keys) =="
"$VENV/bin/python" -m verl.trainer.main_ppo +recipe=rftt --cfg job 2>/dev/null \
  | grep -E "adv_estimator|use_kl_in_reward|kl_coef|default_agent_loop|custom_reward_function|path: pkg|^rftt:|uct_c|max_depth" || true
