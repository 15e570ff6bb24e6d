#!/usr/bin/env bash
# Stage 0 (CPU preset only): a tiny random base model and the toy sum questions as local files,
# so that the pipeline runs offline on a CPU. Skipped unless TOY_INPUTS=1 (presets/cpu-tiny.env).
source "$(dirname "$0")/common.sh"
[ "${TOY_INPUTS:-0}" = 1 ] || { say "not needed (TOY_INPUTS != 1): BASE_MODEL and the sources are real"; exit 0; }
done_or_continue "$WORK/toy/.done"
"$PYTHON" -m rftt_plugin.demo.pipeline_toy --out "$WORK/toy" ${TOY_ARGS:-}
mark_done "$WORK/toy/.done"
