"""Small helpers shared by tests (imported as ``tests.helpers``; tests/__init__.py keeps verl's
wheel-installed ``tests`` package from shadowing ours)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: offline, no wandb, repo importable only through the install."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "RAY_ADDRESS"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def run_python(code: str, *, env: dict | None = None, cwd: str | os.PathLike | None = None, timeout: float = 180,
               python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", code], capture_output=True, text=True, env=env or clean_env(),
                          cwd=cwd, timeout=timeout)
