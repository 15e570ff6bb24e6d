"""The one error style of the ``rftt`` command.

A user mistake (a bad path, a bad row, an output that cannot be written, a run that cannot be
resumed) is raised as :class:`UserError` -- or as one of the library's own error classes listed in
:func:`user_error_of` -- and printed by ``rftt_plugin.cli.main`` as ONE line::

    rftt search: error: q.jsonl:3: invalid JSON (Expecting ',' delimiter at column 12); hint: fix or delete that line

with exit code 2 and no traceback (``rftt --debug ...`` shows it). Anything else is a bug and is
reported as an internal error (exit 1), again in one line unless ``--debug``.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user passed: ``cause`` names the file/row/field, ``hint`` says what to do."""

    exit_code = 2

    def __init__(self, cause: str, hint: str | None = None):
        super().__init__(cause)
        self.cause = cause
        self.hint = hint

    def line(self) -> str:
        return one_line(self.cause) + (f"; hint: {one_line(self.hint)}" if self.hint else "")


def one_line(text: str) -> str:
    """Collapse newlines and runs of spaces so a message stays on one terminal line.

    >>> one_line("a\\n  b   c")
    'a b c'
    """
    return " ".join(str(text).split())


# Library errors that are user mistakes, by class name -> default hint (an exception's own
# ``hint`` attribute wins).
_KNOWN: dict[str, str] = {
    "SourceError": "pass a readable UTF-8 .jsonl/.json/.parquet file or a dataset id",
    "RowError": "fix that row of the file",
    "BenchmarkError": "check --benchmarks, --source NAME=FILE and --data-dir",
    "RunMismatch": "use another --out, or --overwrite to discard the old run",
    "RunLocked": "wait for the other process to finish, or use another --out",
    "JournalError": "fix the named line, or use a new --out",
    "PrepareError": "see rftt prepare-model --help",
    "EvalError": "see rftt eval --help",
    "TagVocabularyError": "run `rftt prepare-model` first, or use --token-mode text",
    "TreeError": "pass a tree JSON written by `rftt search`",
}


def user_error_of(exc: BaseException) -> UserError | None:
    """The :class:`UserError` an exception stands for, or None when it is not a user mistake."""
    if isinstance(exc, UserError):
        return exc
    for cls in type(exc).__mro__:
        if cls.__name__ in _KNOWN:
            hint = getattr(exc, "hint", None) or getattr(exc.__cause__, "hint", None) or _KNOWN[cls.__name__]
            return UserError(str(exc), hint)
    if isinstance(exc, OSError) and exc.filename is not None and not isinstance(exc, ConnectionError):
        return UserError(f"{exc.filename}: {exc.strerror or exc}", "check the path and its permissions")
    return None
