# Sourced by every stage script of examples/pipeline. Not run on its own.
#
# Settings are environment variables. Precedence: what you export > the preset file named by
# $PRESET (presets/*.env) > the defaults below. Every path and size is a variable; `bash
# examples/pipeline/run_all.sh --help` lists them.
set -euo pipefail
PIPELINE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -n "${PRESET:-}" ]; then
  case "$PRESET" in */*) ;; *) PRESET="$PIPELINE_DIR/presets/$PRESET.env" ;; esac
  [ -f "$PRESET" ] || { echo "[pipeline] PRESET=$PRESET: no such file (see $PIPELINE_DIR/presets/)" >&2; exit 2; }
  # shellcheck disable=SC1090
  source "$PRESET"
fi

# -- where things go ------------------------------------------------------------------------------
: "${WORK:=runs/pipeline}"                   # every stage writes under here
: "${EXPERIMENT:=rftt}"                      # logger run name prefix (trainer.experiment_name)
: "${PYTHON:=python}"                        # the Python of the verl environment
: "${RFTT:=rftt}"                            # the rftt command of that environment
: "${NGPUS:=1}"                              # GPUs per node for SFT and RL
# -- 1 prepare ------------------------------------------------------------------------------------
: "${BASE_MODEL:=Qwen/Qwen2.5-1.5B-Instruct}"  # the instruct model (hub id or directory)
: "${PREPARE_ARGS:=}"
# -- 2 phase-1 data -------------------------------------------------------------------------------
: "${PHASE1_SOURCE:=DigitalLearningGmbH/MATH-lighteval}"  # questions with gold answers (hub id or .jsonl/.parquet)
: "${PHASE1_LIMIT:=2000}"                    # questions searched (the paper trains on ~1k stitched samples)
: "${PHASE1_SERVER:=vllm}"                   # vllm: start `vllm serve BASE_MODEL`; toy: the scripted CPU stand-in; none: use PHASE1_BASE_URL
: "${PHASE1_BASE_URL:=}"                     # an already running OpenAI-compatible server (skips starting one)
: "${PHASE1_MODEL_NAME:=}"                   # the model name on that server (default: BASE_MODEL)
: "${PHASE1_PORT:=8011}"
: "${PHASE1_SERVER_ARGS:=}"                  # extra `vllm serve` flags, e.g. --tensor-parallel-size 2
: "${PHASE1_SERVER_WAIT_S:=900}"             # how long to wait for the server to answer
: "${PHASE1_ARGS:=}"                         # extra `rftt gen-sft` flags, e.g. --concurrency 64
# -- 3 RL data ------------------------------------------------------------------------------------
: "${RL_SOURCE:=DigitalLearningGmbH/MATH-lighteval}"
: "${RL_TEST_SIZE:=500}"
: "${RL_DATA_ARGS:=}"
# -- 4 SFT (phase 1 warm-up) ----------------------------------------------------------------------
: "${SFT_ARGS:=}"                            # extra Hydra overrides for verl's SFT trainer (+recipe=rftt_sft)
# -- 5 RL (phase 2) -------------------------------------------------------------------------------
: "${RL_RECIPE:=rftt}"                       # rftt (faithful) or rftt_tree (tree credit)
: "${ROLLOUT:=vllm}"                         # actor_rollout_ref.rollout.name (hfcpu on CPU)
: "${RL_ARGS:=}"                             # extra Hydra overrides for main_ppo
# -- 7 eval ---------------------------------------------------------------------------------------
: "${EVAL_BENCHMARKS:=math500,gsm8k,aime24,amc23,olympiadbench}"
: "${EVAL_DEVICE:=auto}"                     # auto: cuda + bfloat16 when a GPU is present
: "${EVAL_ITERATIONS:=1,2,4,8,16}"
: "${EVAL_ARGS:=}"                           # extra `rftt eval` flags for both modes (e.g. --limit 100, --source NAME=FILE)
: "${EVAL_TREE_ARGS:=}"                      # extra flags for the tree mode only

STAGE=$(basename "$0" .sh)
say() { echo "[pipeline:$STAGE] $*" >&2; }
die() { say "error: $*"; exit 1; }

# need PATH "what makes it": stop with the stage that produces a missing input.
need() { [ -e "$1" ] || die "missing $1 -- $2"; }

# done_or_continue MARKER: a finished stage is skipped on a rerun (FORCE=1 redoes it).
done_or_continue() {
  if [ -e "$1" ] && [ "${FORCE:-0}" != 1 ]; then
    say "already done ($1); skipped (FORCE=1 redoes it)"
    exit 0
  fi
}
mark_done() { mkdir -p "$(dirname "$1")"; date -u +%FT%TZ > "$1"; say "done"; }
