"""``rftt dry-run``: run a recipe's ``main_ppo`` unchanged on CPU for a couple of real steps."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  rftt dry-run --demo                                   # no arguments needed: tiny model + synthetic data
  rftt dry-run -- +recipe=rftt actor_rollout_ref.model.path=Qwen/Qwen2.5-7B-Instruct \\
      data.train_files=data/train.parquet data.val_files=data/test.parquet
  rftt dry-run --model ckpt/sft --steps 3 -- algorithm.adv_estimator=grpo data.train_files=...

The recipe's model is replaced by a tiny random model of the same architecture family with the
same tokenizer (cached under ~/.cache/rftt/dryrun-models). Overrides after `--` go to main_ppo
as they are; the `+dryrun=cpu` overlay (rftt_plugin/config/dryrun/cpu.yaml) is appended and its
values win over yours where they collide (each replacement is printed). Exit code 0 = PASS.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--model", help="model to imitate (local path or a hub id in the local cache); default: "
                                        "the actor_rollout_ref.model.path override")
    parser.add_argument("--keep-model", action="store_true", help="use the model as is instead of a tiny clone")
    parser.add_argument("--steps", type=int, default=2, help="training steps (default 2)")
    parser.add_argument("--gpus", type=int, default=1, help="logical GPUs = FSDP ranks over gloo (default 1)")
    parser.add_argument("--demo", action="store_true", help="build a tiny model and a synthetic parquet, run GRPO")
    parser.add_argument("--workdir", type=Path, help="where logs, Hydra outputs and demo assets go (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=900.0, help="hard limit in seconds (default 900)")
    parser.add_argument("-v", "--verbose", action="store_true", help="echo all of main_ppo's output")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="-- then main_ppo overrides")


def run(args) -> int:
    from rftt_plugin.cpu.dryrun.launcher import DryRunOptions, format_report, run_dry_run

    overrides = list(args.overrides)
    if overrides and overrides[0] == "--":
        overrides = overrides[1:]
    if not overrides and not args.demo and not args.model:
        from rftt_plugin.errors import UserError

        raise UserError("nothing to run", "try `rftt dry-run --demo`, or pass a recipe's overrides after `--`")
    opts = DryRunOptions(
        overrides=overrides, model=args.model, keep_model=args.keep_model, steps=args.steps, gpus=args.gpus,
        demo=args.demo, workdir=args.workdir, timeout_s=args.timeout, verbose=args.verbose,
    )
    report = run_dry_run(opts)
    print(format_report(report))
    return 0 if report.verdict.passed else 1
