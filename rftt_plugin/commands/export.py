"""``rftt export``: a verl checkpoint directory -> one plain Hugging Face model directory.

The bridge between pipeline stages: SFT -> RL (``actor_rollout_ref.model.path``) and RL -> eval
(``rftt eval --model``). Copies the Hugging Face copy that the recipes save (``hf_model`` in
``checkpoint.save_contents``), or runs verl's model merger on the FSDP shards when there is none.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

DESCRIPTION = """\
Write the Hugging Face model of a verl checkpoint to --out, ready for the next stage:
  SFT  -> RL:   rftt export --checkpoint-dir <sft trainer.default_local_dir> --out ckpt/sft-hf
  RL   -> eval: rftt export --checkpoint-dir <main_ppo trainer.default_local_dir> --out ckpt/rl-hf

Takes the newest global_step_<N> (or --step). The rftt recipes save a Hugging Face copy with every
checkpoint (global_step_<N>/huggingface for SFT, global_step_<N>/actor/huggingface for main_ppo);
it is copied. Without one (an older run, or checkpoint.save_contents without hf_model), verl's
model merger (python -m verl.model_merger merge --backend fsdp) builds it from the FSDP shards.
Writes rftt_export.json (source step and path) beside the model."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint-dir", required=True,
                        help="the trainer's trainer.default_local_dir (holds global_step_<N>/), or one global_step_<N>")
    parser.add_argument("--out", required=True, help="directory for the Hugging Face model (created)")
    parser.add_argument("--step", type=int, default=None, help="export this global step (default: the newest)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from rftt_plugin.errors import UserError
    from rftt_plugin.export import CheckpointNotFound, locate, merger_command

    try:
        found = locate(args.checkpoint_dir, args.step)
    except CheckpointNotFound as exc:
        raise UserError(str(exc), "pass the directory the training stage wrote (trainer.default_local_dir)") from None
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        marker = out / "rftt_export.json"
        if marker.is_file() and not args.overwrite:
            done = json.loads(marker.read_text())
            if done.get("step") == found.step and done.get("source") == str(found.step_dir.resolve()):
                print(f"rftt export: {out} already holds step {found.step} of {found.step_dir}; nothing to do")
                return 0
        if not args.overwrite:
            raise UserError(f"{out} is not empty", "pass --overwrite to replace it, or choose another --out")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if found.kind == "hf":
        print(f"rftt export: copying the Hugging Face copy of step {found.step} ({found.hf_dir})", file=sys.stderr)
        shutil.copytree(found.hf_dir, tmp)
    else:
        cmd = merger_command(sys.executable, found.shard_dir, tmp)
        print(f"rftt export: no Hugging Face copy in step {found.step}; running verl's model merger:\n  {' '.join(cmd)}",
              file=sys.stderr)
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"verl's model merger failed (exit {proc.returncode}) on {found.shard_dir}",
                            "see its output above; the shards may be incomplete")
    (tmp / "rftt_export.json").write_text(json.dumps(
        {"step": found.step, "source": str(found.step_dir.resolve()), "kind": found.kind}, indent=2) + "\n")
    tmp.rename(out)  # only a complete export ever carries the final name
    print(f"rftt export: step {found.step} -> {out}")
    return 0
