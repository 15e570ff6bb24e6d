#!/usr/bin/env bash
# Stage 5 (phase 2): RL with verl's stock main_ppo and the rftt recipe (functional MCTS rollouts,
# REINFORCE++), from the SFT model -> checkpoints in $WORK/rl/ckpt. Each step's console line
# carries verl's metrics and the tree metrics (rftt/...). A killed run resumes from its last
# checkpoint (trainer.resume_mode=auto; trainer.save_freq sets how often one is written).
source "$(dirname "$0")/common.sh"
done_or_continue "$WORK/rl/.done"
need "$WORK/sft/hf/rftt_export.json" "run examples/pipeline/4_sft.sh first"
need "$WORK/data_rl/.done" "run examples/pipeline/3_data_rl.sh first"
"$PYTHON" -m verl.trainer.main_ppo +recipe="$RL_RECIPE" \
  actor_rollout_ref.model.path="$WORK/sft/hf" \
  data.train_files="$WORK/data_rl/train.parquet" data.val_files="$WORK/data_rl/test.parquet" \
  actor_rollout_ref.rollout.name="$ROLLOUT" trainer.n_gpus_per_node="$NGPUS" \
  trainer.default_local_dir="$WORK/rl/ckpt" trainer.experiment_name="$EXPERIMENT-$RL_RECIPE" \
  hydra.run.dir="$WORK/rl/hydra" $RL_ARGS
mark_done "$WORK/rl/.done"
