#!/usr/bin/env bash
# Stage 4 (phase 1 warm-up): full SFT of the prepared model on the phase-1 samples with verl's
# SFT trainer (+recipe=rftt_sft), then its Hugging Face copy -> $WORK/sft/hf. A killed run
# resumes from its last checkpoint (verl's trainer.resume_mode=auto).
source "$(dirname "$0")/common.sh"
done_or_continue "$WORK/sft/hf/rftt_export.json"
need "$WORK/model/rftt_tokens.json" "run examples/pipeline/1_prepare.sh first"
need "$WORK/phase1/.done" "run examples/pipeline/2_phase1_data.sh first"
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NGPUS" -m verl.trainer.sft_trainer \
  +recipe=rftt_sft model.path="$WORK/model" data.train_files="$WORK/phase1/train.parquet" \
  trainer.default_local_dir="$WORK/sft/ckpt" trainer.experiment_name="$EXPERIMENT-sft" \
  hydra.run.dir="$WORK/sft/hydra" $SFT_ARGS
"$RFTT" export --checkpoint-dir "$WORK/sft/ckpt" --out "$WORK/sft/hf"
