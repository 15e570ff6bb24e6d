"""The ``rftt`` command. Thin: each subcommand lives in ``rftt_plugin.commands.<module>``.

A command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only
when its subcommand is used, so ``rftt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under rftt_plugin.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("doctor", "check that the plugin is wired into verl here (registrations, recipes, versions)"),
    "dry-run": ("dry_run", "run a recipe's main_ppo unchanged on CPU for a few real steps (tiny model clone)"),
    "data": ("data", "build verl RL parquet from the MATH training set or a local file (`rftt data rl`)"),
    "quickstart": ("quickstart", "run the whole RFTT pipeline at toy scale on CPU (prepare, SFT, RL, eval)"),
    "prepare-model": ("prepare_model", "add the functional tokens to a Hugging Face checkpoint (new rows, manifest)"),
    "gen-sft": ("gen_sft", "phase 1: prompted tree search + branch merging -> verl SFT parquet (resumable)"),
    "eval": ("eval", "evaluate on MATH-500/GSM8K/AIME24/AMC23/OlympiadBench: greedy chain or tree search, resumable"),
    "search": ("search", "functional tree search over questions (hf, OpenAI-compatible server); one JSON per tree"),
    "show": ("show", "render a search tree in the terminal, or as an interactive HTML page (--html)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rftt",
        description="RFTT (Reinforced Functional Token Tuning) tools for verl. "
        "Training itself runs through verl: python -m verl.trainer.main_ppo +recipe=rftt ...",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module = importlib.import_module(f"rftt_plugin.commands.{COMMANDS[name][0]}")
    sub = argparse.ArgumentParser(prog=f"rftt {name}", description=COMMANDS[name][1],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
