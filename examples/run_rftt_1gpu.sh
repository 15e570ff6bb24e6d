#!/usr/bin/env bash
# RFTT phase 2 on ONE GPU with a small instruct model (Qwen2.5-1.5B-Instruct by default).
#
# UNVERIFIED ESTIMATE (never run on a GPU by this project): ~40-60 GB on one 80 GB H100 with
# vLLM gpu_memory_utilization 0.4 and param/optimizer offload off; roughly 10-20 min per step at
# 8 prompts x 8 leaves, i.e. a few hours for 20 steps. Check with `rftt dry-run` on CPU first.
#
# Prerequisites, in the verl 0.9.x environment that has vLLM:
#   pip install rftt-plugin && rftt doctor
#   rftt prepare-model --model Qwen/Qwen2.5-1.5B-Instruct --out ckpt/qwen1.5b-rftt
#   (phase 1 SFT on ckpt/qwen1.5b-rftt; see README "Phase 1")
#   rftt data rl --source DigitalLearningGmbH/MATH-lighteval --out data/math_rl --test-size 500
set -euo pipefail
MODEL=${MODEL:-ckpt/qwen1.5b-rftt-sft}
DATA=${DATA:-data/math_rl}
python -m verl.trainer.main_ppo +recipe=rftt \
  actor_rollout_ref.model.path="$MODEL" \
  data.train_files="$DATA/train.parquet" data.val_files="$DATA/test.parquet" \
  data.train_batch_size=8 data.max_response_length=4096 \
  actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.n=8 rftt.search.iterations=8 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384 \
  actor_rollout_ref.model.enable_gradient_checkpointing=True \
  trainer.n_gpus_per_node=1 trainer.nnodes=1 \
  trainer.total_training_steps=${STEPS:-20} trainer.test_freq=10 trainer.save_freq=10 \
  trainer.logger='[console]' trainer.project_name=rftt trainer.experiment_name=qwen1.5b-1gpu "$@"
