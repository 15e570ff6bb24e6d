"""The command modules stay thin: each function at most 40 lines (issue 30). A command parses its
flags into a job, checks it and runs it (``rftt_plugin.jobs``); the work lives in the jobs."""

from __future__ import annotations

import ast
from pathlib import Path

import rftt_plugin

COMMANDS = Path(rftt_plugin.__file__).parent / "commands"
MAX_LINES = 40
# Known exceptions, each with the reason it is still long (none today).
ALLOWED: dict[str, int] = {}


def function_lengths(source: str, name: str) -> dict[str, int]:
    """``file:function`` -> lines from ``def`` to its last line (nested functions count on their own too)."""
    return {f"{name}:{node.name}": node.end_lineno - node.lineno + 1 for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_function_lengths_counts_lines_from_def_to_the_end():
    source = "def a():\n    x = 1\n\n    def b():\n        return x\n    return b\n"
    assert function_lengths(source, "m.py") == {"m.py:a": 6, "m.py:b": 2}


def test_no_command_function_is_over_40_lines():
    lengths: dict[str, int] = {}
    for path in sorted(COMMANDS.glob("*.py")):
        lengths.update(function_lengths(path.read_text(encoding="utf-8"), path.name))
    assert len(lengths) > 30  # the walk found the commands
    too_long = {name: n for name, n in lengths.items() if n > ALLOWED.get(name, MAX_LINES)}
    assert not too_long, f"command functions over {MAX_LINES} lines (move the work into a job): {too_long}"
