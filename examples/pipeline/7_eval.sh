#!/usr/bin/env bash
# Stage 7: evaluate the RL model: greedy chain decoding (pass@1) and functional tree search at
# the budgets EVAL_ITERATIONS -> $WORK/eval/{chain,tree}/results.md. Resumable per question.
source "$(dirname "$0")/common.sh"
MODEL=${EVAL_MODEL:-$WORK/rl/hf}
need "$MODEL/config.json" "run examples/pipeline/6_export.sh first (or set EVAL_MODEL)"
common=(--model "$MODEL" --device "$EVAL_DEVICE" --benchmarks "$EVAL_BENCHMARKS")
"$RFTT" eval "${common[@]}" --mode chain --out "$WORK/eval/chain" $EVAL_ARGS
"$RFTT" eval "${common[@]}" --mode tree --iterations "$EVAL_ITERATIONS" --out "$WORK/eval/tree" $EVAL_ARGS $EVAL_TREE_ARGS
say "results: $WORK/eval/chain/results.md and $WORK/eval/tree/results.md"
