"""The ``rftt`` command. Thin: each subcommand lives in ``rftt_plugin.commands.<module>``.

A command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only
when its subcommand is used, so ``rftt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rftt_plugin import __version__

# name -> (module under rftt_plugin.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("doctor", "check that the plugin is wired into verl here (registrations, recipes, versions)"),
    "dry-run": ("dry_run", "run a recipe's main_ppo unchanged on CPU for a few real steps (tiny model clone)"),
    "data": ("data", "build verl RL parquet from the MATH training set or a local file (`rftt data rl`)"),
    "quickstart": ("quickstart", "run the whole RFTT pipeline at toy scale on CPU (prepare, SFT, RL, eval)"),
    "prepare-model": ("prepare_model", "add the functional tokens to a Hugging Face checkpoint (new rows, manifest)"),
    "gen-sft": ("gen_sft", "phase 1: prompted tree search + branch merging -> verl SFT parquet (resumable)"),
    "eval": ("eval", "evaluate on MATH-500/GSM8K/AIME24/AMC23/OlympiadBench or your own file: greedy chain or tree search, resumable"),
    "search": ("search", "functional tree search over questions (hf, OpenAI-compatible server); one JSON per tree"),
    "export": ("export", "a verl checkpoint (SFT or main_ppo) -> a Hugging Face model dir for the next stage"),
    "show": ("show", "render a search tree in the terminal, or as an interactive HTML page (--html)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error style: ``rftt CMD: error: MSG; hint: ...`` and exit 2."""

    def error(self, message: str):  # type: ignore[override]
        from rftt_plugin.errors import one_line

        self.exit(2, f"{self.prog}: error: {one_line(message)}; hint: see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rftt",
        description="RFTT (Reinforced Functional Token Tuning) tools for verl. "
        "Training itself runs through verl: python -m verl.trainer.main_ppo +recipe=rftt ...",
    )
    parser.add_argument("--version", action="version", version=f"rftt {__version__}",
                        help="print the rftt-plugin version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (default: one line naming the cause)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def _report(name: str, exc: BaseException) -> int:
    """Print ``exc`` as the one error line of ``rftt NAME``; return the exit code."""
    from rftt_plugin.errors import one_line, user_error_of

    err = user_error_of(exc)
    if err is not None:
        print(f"rftt {name}: error: {err.line()}", file=sys.stderr)
        return err.exit_code
    print(f"rftt {name}: internal error: {type(exc).__name__}: {one_line(str(exc))[:500]}; "
          "hint: rerun with `rftt --debug ...` for the traceback and report it", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run ``rftt``. Errors: one line, exit 2 for user mistakes (see ``rftt_plugin.errors``),
    1 for internal errors, 130 on Ctrl-C; ``--debug`` (anywhere on the line) re-raises with the
    traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Global flag, accepted anywhere (`rftt --debug search ...`, `rftt data rl ... --debug`).
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    if argv and argv[0] in ("--version", "-V"):
        print(f"rftt {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module = importlib.import_module(f"rftt_plugin.commands.{COMMANDS[name][0]}")
    sub = _Parser(prog=f"rftt {name}", description=COMMANDS[name][1],
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sub)
    sub.epilog = (sub.epilog + "\n" if sub.epilog else "") + "Errors are one line; rftt --debug ... shows the traceback."
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\nrftt {name}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if debug or not isinstance(exc.code, str):
            raise
        from rftt_plugin.errors import UserError  # a command's `raise SystemExit("message")`

        return _report(name, UserError(exc.code, f"see rftt {name} --help"))
    except Exception as exc:  # noqa: BLE001 - the one place errors become the one-line style
        if debug:
            raise
        return _report(name, exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
