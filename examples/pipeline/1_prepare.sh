#!/usr/bin/env bash
# Stage 1: add the 16 functional tokens to BASE_MODEL (verl never adds tokens) -> $WORK/model.
source "$(dirname "$0")/common.sh"
done_or_continue "$WORK/model/rftt_tokens.json"
"$RFTT" prepare-model --model "$BASE_MODEL" --out "$WORK/model" $PREPARE_ARGS
need "$WORK/model/rftt_tokens.json" "rftt prepare-model did not write its manifest"
say "done: $WORK/model"
