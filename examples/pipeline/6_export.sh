#!/usr/bin/env bash
# Stage 6: the RL actor's Hugging Face copy of the last step -> $WORK/rl/hf (rftt export; verl's
# model merger runs on the FSDP shards when there is no copy).
source "$(dirname "$0")/common.sh"
need "$WORK/rl/.done" "run examples/pipeline/5_rl.sh first"
"$RFTT" export --checkpoint-dir "$WORK/rl/ckpt" --out "$WORK/rl/hf"
