"""``rftt show TREE.json``: print a search tree; ``--html OUT.html`` writes an interactive page."""

from __future__ import annotations

import argparse
import json
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
    from rftt_plugin.search.tree import TREE_FORMAT, Tree
    from rftt_plugin.tree_view.validate import TreeError, validate_tree_dict
    from rftt_plugin.tree_view.render import render_html, render_text

    path = Path(args.tree)
    if not path.is_file():
        raise UserError(f"{args.tree}: {'is a directory' if path.is_dir() else 'no such file'}",
                        "pass a trees/NNNNN.json file written by `rftt search`")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(f"cannot read {args.tree}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x})",
                        "pass a tree JSON written by `rftt search`") from None
    except ValueError as exc:
        where = f":{exc.lineno}" if hasattr(exc, "lineno") else ""
        raise UserError(f"cannot read {args.tree}{where}: invalid JSON ({getattr(exc, 'msg', exc)})",
                        "pass a tree JSON written by `rftt search`") from None
    try:
        validate_tree_dict(data, TREE_FORMAT)
        tree = Tree.from_dict(data)
    except (TreeError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read {args.tree}: {exc}", "pass a tree JSON written by `rftt search`") from None
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
