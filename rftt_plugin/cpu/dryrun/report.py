"""Read a dry run's output: verl's console metrics per step, hfcpu's weight events, and a verdict.

verl's console logger prints one line per step, ``step:N - key:value - key:value ...``
(verl/utils/logger/aggregate_logger.py:13-20, forwarded by Ray with a ``(TaskRunnerV1 pid=..)``
prefix). Values may be reprs such as ``np.float64(0.0)``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

_STEP_RE = re.compile(r"\bstep:(\d+) - (.*)$")
_NUMBER_RE = re.compile(r"^(?:np\.\w+\()?\s*([-+0-9.eEinfa]+)\s*\)?$")

STAGE_ORDER = ("gen", "reward", "old_log_prob", "ref", "values", "adv", "update_critic", "update_actor",
               "update_weights", "save_checkpoint", "testing", "step")


def parse_value(text: str) -> Optional[float]:
    match = _NUMBER_RE.match(text.strip())
    if not match:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None


def parse_step_metrics(lines: Iterable[str]) -> dict[int, dict[str, float]]:
    """``{step: {metric: value}}`` from verl console lines (any prefix before ``step:``)."""
    steps: dict[int, dict[str, float]] = {}
    for line in lines:
        match = _STEP_RE.search(line.rstrip())
        if not match:
            continue
        metrics = steps.setdefault(int(match.group(1)), {})
        for item in match.group(2).split(" - "):
            key, sep, value = item.rpartition(":")
            if not sep:
                continue
            number = parse_value(value)
            if number is not None:
                metrics[key.strip()] = number
    return steps


def read_events(path: Optional[Path]) -> list[dict]:
    if path is None or not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def loads_by_replica(events: list[dict]) -> dict[int, list[dict]]:
    """hfcpu ``load_weights`` events per replica, in order (replicas share one event log)."""
    loads: dict[int, list[dict]] = {}
    for event in events:
        if event.get("event") == "load_weights":
            loads.setdefault(int(event.get("replica", 0)), []).append(event)
    return loads


@dataclass
class Verdict:
    passed: bool
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def judge(returncode: Optional[int], steps: dict[int, dict[str, float]], expected_steps: int,
          events: list[dict], timed_out: bool = False) -> Verdict:
    failures, warnings = [], []
    if timed_out:
        failures.append("the run hit the launcher's timeout")
    elif returncode != 0:
        failures.append(f"main_ppo exited with code {returncode}")
    done = sorted(steps)
    if len(done) < expected_steps:
        failures.append(f"{len(done)} of {expected_steps} training steps logged")
    for step in done:
        m = steps[step]
        grad = m.get("actor/grad_norm")
        if grad is None or not math.isfinite(grad):
            failures.append(f"step {step}: actor/grad_norm missing or not finite ({grad})")
        elif grad == 0:
            warnings.append(f"step {step}: actor/grad_norm is 0 (constant rewards -> zero advantages? a random "
                            f"tiny model rarely earns a real reward; to exercise a real update add "
                            f"reward.custom_reward_function.path=pkg://rftt_plugin.cpu.dryrun.toy_reward)")
        if m.get("critic/advantages/max", 0.0) == 0.0 and m.get("critic/advantages/min", 0.0) == 0.0:
            warnings.append(f"step {step}: all advantages are 0")
        staleness = m.get("training/off_policy/trajectory_staleness/max")
        if staleness is not None and staleness != 0:
            failures.append(f"step {step}: rollout served weights {staleness:g} step(s) old")
    for replica, loads in loads_by_replica(events).items():
        synced = [e.get("global_steps") for e in loads]
        wanted = list(range(0, expected_steps + 1))
        if synced[: len(wanted)] != wanted:
            failures.append(f"replica {replica}: weight syncs carried global_steps {synced}, expected {wanted}")
        versions = [e.get("version") for e in loads]
        if versions != sorted(set(versions)):
            failures.append(f"replica {replica}: weight versions did not advance: {versions}")
    return Verdict(not failures, failures, warnings)


def timing_table(steps: dict[int, dict[str, float]]) -> str:
    """Per-stage ``timing_s/*`` seconds, one column per step."""
    if not steps:
        return "(no step metrics found)"
    keys = sorted({k for m in steps.values() for k in m if k.startswith("timing_s/")},
                  key=lambda k: (STAGE_ORDER.index(k[9:]) if k[9:] in STAGE_ORDER else len(STAGE_ORDER), k))
    cols = sorted(steps)
    width = max([len("stage")] + [len(k) - 9 for k in keys])
    lines = ["stage".ljust(width) + "".join(f"  step {c:>3}" for c in cols)]
    for key in keys:
        cells = "".join(f"  {steps[c].get(key, float('nan')):8.2f}" for c in cols)
        lines.append(key[9:].ljust(width) + cells)
    return "\n".join(lines)
