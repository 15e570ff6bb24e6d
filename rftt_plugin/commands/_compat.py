"""Old flag names kept for one release (0.2.x) as deprecated aliases of the current ones.

One name per concept across the subcommands and the recipe keys (docs/cli.md):
``--quiet`` (was ``--no-progress`` in ``rftt search``), ``--iterations`` = ``rftt.search.iterations``
(was ``--rollouts`` in ``rftt eval``), ``--tag-readout`` = ``rftt.tag_readout`` (was
``--logprob-method`` in ``rftt search``). An alias sets the same value and prints one warning line.
"""

from __future__ import annotations

import argparse
import sys

REMOVED_IN = "0.3.0"


def _warn(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    print(f"{parser.prog}: warning: {old} is deprecated and will be removed in {REMOVED_IN}; use {new}",
          file=sys.stderr)


class _DeprecatedStore(argparse.Action):
    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        _warn(parser, option_string, self.new)
        setattr(namespace, self.dest, values)


class _DeprecatedTrue(argparse.Action):
    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        _warn(parser, option_string, self.new)
        setattr(namespace, self.dest, True)


def deprecated_alias(group, old: str, new: str, dest: str, *, flag: bool = False, **kwargs) -> None:
    """Add ``old`` as a deprecated alias of ``new`` (same ``dest``); ``flag``: a store-true switch."""
    action = _DeprecatedTrue if flag else _DeprecatedStore
    group.add_argument(old, dest=dest, action=action, new=new, default=argparse.SUPPRESS,
                       help=f"deprecated alias of {new} (removed in {REMOVED_IN})", **kwargs)
