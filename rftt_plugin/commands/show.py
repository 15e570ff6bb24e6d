"""``rftt show TREE.json``: print a search tree; ``--html OUT.html`` writes an interactive page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tree", help="a tree JSON written by `rftt search` (or the rftt_tree rollout)")
    parser.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML page")
    parser.add_argument("--width", type=int, default=70, help="characters of step text per line")
    parser.add_argument("--max-depth", type=int, default=None, help="print down to this depth")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--quiet", action="store_true", help="no terminal output (with --html)")


def run(args: argparse.Namespace) -> int:
    from rftt_plugin.errors import UserError
    from rftt_plugin.tree_view import TreeFileError, load_tree_file
    from rftt_plugin.tree_view.render import render_html, render_text

    path = Path(args.tree)
    try:
        tree = load_tree_file(path)
    except TreeFileError as exc:
        raise UserError(str(exc), "pass a trees/NNNNN.json file written by `rftt search`") from None
    if args.html:  # first, so a closed pipe on stdout (| head) cannot lose it
        Path(args.html).write_text(render_html(tree, title=path.name), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    if not args.quiet:
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
        try:
            print(render_text(tree, width=args.width, max_depth=args.max_depth, color=color))
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (| head): not an error
    return 0
