#!/usr/bin/env bash
# The whole RFTT pipeline, one stage script after the other (each can also be run on its own):
#   0_toy_inputs  (CPU preset only) tiny model + toy questions as local files
#   1_prepare     rftt prepare-model                 -> $WORK/model
#   2_phase1_data vllm serve + rftt gen-sft           -> $WORK/phase1/train.parquet
#   3_data_rl     rftt data rl                        -> $WORK/data_rl/{train,test}.parquet
#   4_sft         verl SFT +recipe=rftt_sft, export   -> $WORK/sft/hf
#   5_rl          verl main_ppo +recipe=rftt          -> $WORK/rl/ckpt
#   6_export      rftt export                         -> $WORK/rl/hf
#   7_eval        rftt eval (chain and tree search)   -> $WORK/eval/{chain,tree}
# A rerun skips finished stages and resumes an interrupted one (FORCE=1 redoes a stage).
#
#   PRESET=qwen1.5b-1gpu bash examples/pipeline/run_all.sh      # 1 GPU, Qwen2.5-1.5B-Instruct
#   PRESET=qwen7b-8gpu   bash examples/pipeline/run_all.sh      # 8 GPUs, Qwen2.5-7B-Instruct (the paper)
#   PRESET=cpu-tiny      bash examples/pipeline/run_all.sh      # CPU, tiny model, offline (what CI runs)
#   FROM=5 bash examples/pipeline/run_all.sh                    # start at stage 5 (inputs must exist)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  echo; echo "Settings (environment variables; a preset file in $HERE/presets sets several at once):"
  grep -E '^: "\$\{[A-Z0-9_]+:=' "$HERE/common.sh" | sed -E 's/^: "\$\{([A-Z0-9_]+):=([^}]*)\}"[[:space:]]*(# ?)?/  \1=\2   /'
  exit 0
fi
FROM=${FROM:-0}
start=$(date +%s)
for script in "$HERE"/[0-7]_*.sh; do
  name=$(basename "$script" .sh)
  [ "${name%%_*}" -ge "$FROM" ] || continue
  t0=$(date +%s)
  echo "[pipeline] ===== $name =====" >&2
  bash "$script"
  echo "[pipeline] $name: $(( $(date +%s) - t0 )) s" >&2
done
echo "[pipeline] all stages done in $(( $(date +%s) - start )) s" >&2
