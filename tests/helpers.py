"""Small helpers shared by tests (imported as ``tests.helpers``; tests/__init__.py keeps verl's
wheel-installed ``tests`` package from shadowing ours)."""

from __future__ import annotations

import math
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


def run_verl(cmd: list[str], workdir: Path, timeout_s: float, tag: str):
    """Run a verl entry point (main_ppo, ...) offline, with a private RAY_TMPDIR and a hard timeout;
    every process of the run is cleaned up afterwards, also on failure."""
    import shutil

    from rftt_plugin.cpu.dryrun.process import run_logged

    ray_tmp = f"/tmp/rftt-{tag}-{os.getpid()}"  # short: Ray's AF_UNIX socket paths must fit in ~107 bytes
    os.makedirs(ray_tmp, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "RAY_TMPDIR": ray_tmp}
    try:
        return run_logged(cmd, env, Path(workdir) / f"{tag}.log", timeout_s, marker=ray_tmp, echo=None), ray_tmp
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


class InFlightCounter:
    """Wrap ``obj.<method>`` (an async method) to record the peak number of concurrent calls."""

    def __init__(self, obj, method: str = "generate"):
        self.in_flight = 0
        self.peak = 0
        real = getattr(obj, method)

        async def counting(*args, **kwargs):
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                return await real(*args, **kwargs)
            finally:
                self.in_flight -= 1

        setattr(obj, method, counting)


def two_sided_sign_test(gained: int, lost: int) -> float:
    """Exact McNemar (sign test on the discordant questions), written out here as the reference."""
    n = gained + lost
    k = min(gained, lost)
    tail = 0.0
    for i in range(k + 1):
        tail += math.comb(n, i) * 0.5 ** n
    return min(1.0, 2 * tail)
