"""Command-line flags built from :class:`~rftt_plugin.search.config.SearchConfig`'s fields.

``rftt search`` and ``rftt eval`` take a subset of the search knobs; their flag names, types,
defaults and help all come from the dataclass (``--step-max-tokens`` <-> ``step_max_tokens``),
so a default changed there changes everywhere.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any, Sequence

from rftt_plugin.search.config import FIELD_HELP, SearchConfig
from rftt_plugin.tag_ids import TOKEN_MODES


def add_search_flags(group: Any, names: Sequence[str], aliases: dict[str, Sequence[str]] | None = None,
                     prefix_help: str = "") -> None:
    """Add ``--<field-name>`` for each SearchConfig field in ``names`` (``aliases``: extra option
    strings for a field, kept for older command lines)."""
    defaults = SearchConfig()
    types = {f.name: f.type for f in fields(SearchConfig)}
    for name in names:
        if name not in types:
            raise ValueError(f"SearchConfig has no field {name!r}")
        default = getattr(defaults, name)
        flags = ["--" + name.replace("_", "-"), *((aliases or {}).get(name, ()))]
        text = f"{prefix_help}{FIELD_HELP[name]} (default {default})"
        if isinstance(default, bool):
            group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif name == "token_mode":
            group.add_argument(*flags, dest=name, choices=TOKEN_MODES, default=default, help=text)
        elif isinstance(default, tuple):  # a list of names, comma-separated on the command line
            group.add_argument(*flags, dest=name, type=_names, default=default, metavar="NAME[,NAME...]",
                               help=f"{prefix_help}{FIELD_HELP[name]} (default none)")
        else:
            group.add_argument(*flags, dest=name, type=type(default), default=default, help=text)


def _names(text: str) -> tuple[str, ...]:
    """``"verify, refine"`` -> ``("verify", "refine")`` (SearchConfig checks the names).

    >>> _names("verify, refine,")
    ('verify', 'refine')
    """
    return tuple(part.strip() for part in text.split(",") if part.strip())


def search_values(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The parsed values of the flags added by :func:`add_search_flags`, by field name."""
    return {name: getattr(args, name) for name in names}
