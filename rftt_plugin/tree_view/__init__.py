"""Looking at search trees (``rftt show``): validate a tree file, render it for a terminal or HTML.

:func:`load_tree_file` reads and checks a tree JSON (one-line :class:`TreeFileError` naming the
file, line or node); :func:`write_tree_html` is what ``rftt show TREE --html OUT`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path


class TreeFileError(ValueError):
    """A tree file that cannot be shown (missing, not UTF-8, not JSON, not a well-formed tree)."""


def load_tree_file(path: str | Path):
    """The :class:`~rftt_plugin.search.tree.Tree` in ``path``, checked before any renderer sees it."""
    from rftt_plugin.search.tree import TREE_FORMAT, Tree
    from rftt_plugin.tree_view.validate import TreeError, validate_tree_dict

    path = Path(path)
    if not path.is_file():
        raise TreeFileError(f"{path}: {'is a directory' if path.is_dir() else 'no such file'}")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise TreeFileError(f"cannot read {path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x})") from None
    except ValueError as exc:
        where = f":{exc.lineno}" if hasattr(exc, "lineno") else ""
        raise TreeFileError(f"cannot read {path}{where}: invalid JSON ({getattr(exc, 'msg', exc)})") from None
    try:
        validate_tree_dict(data, TREE_FORMAT)
        return Tree.from_dict(data)
    except (TreeError, ValueError, KeyError, TypeError) as exc:
        raise TreeFileError(f"cannot read {path}: {exc}") from None


def write_tree_html(tree_file: str | Path, html: str | Path) -> Path:
    """Render ``tree_file`` as a self-contained HTML page at ``html``."""
    from rftt_plugin.tree_view.render import render_html

    tree_file, html = Path(tree_file), Path(html)
    html.write_text(render_html(load_tree_file(tree_file), title=tree_file.name), encoding="utf-8")
    return html
