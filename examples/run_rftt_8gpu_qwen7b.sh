#!/usr/bin/env bash
# RFTT phase 2 at the paper's settings: Qwen2.5-7B-Instruct (after the SFT warm-up), 8 GPUs,
# 16 prompts x 16 leaves per step, depth cap 18, REINFORCE++ with KL 0.01 in the reward, lr 5e-7.
#
# UNVERIFIED ESTIMATE (never run on a GPU by this project): one 8x80 GB node; the reference
# implementation reports ~250 steps for its curves. With tree paths up to 8k tokens expect
# roughly 20-40 min per step (search + update), i.e. several days for 250 steps; peak ~60-70 GB
# per GPU with FSDP2, gradient checkpointing and vLLM at 0.5 memory utilisation.
#
# Prerequisites: rftt prepare-model --model Qwen/Qwen2.5-7B-Instruct --out ckpt/qwen7b-rftt,
# phase-1 SFT (recipe rftt_sft), and `rftt data rl --source DigitalLearningGmbH/MATH-lighteval`.
set -euo pipefail
MODEL=${MODEL:-ckpt/qwen7b-rftt-sft}
DATA=${DATA:-data/math_rl}
python -m verl.trainer.main_ppo +recipe=rftt \
  actor_rollout_ref.model.path="$MODEL" \
  data.train_files="$DATA/train.parquet" data.val_files="$DATA/test.parquet" \
  actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
  actor_rollout_ref.model.enable_gradient_checkpointing=True \
  trainer.n_gpus_per_node=8 trainer.nnodes=1 trainer.total_training_steps=250 \
  trainer.test_freq=20 trainer.save_freq=20 \
  trainer.project_name=rftt trainer.experiment_name=qwen7b-paper "$@"
