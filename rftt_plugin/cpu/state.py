"""What the CPU support did in this process, for :func:`rftt_plugin.cpu.status` and ``rftt doctor``.

Every step records itself here instead of only logging, because verl swallows plugin errors and
most of the work happens lazily (when a verl module is imported), long after ``install()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Values of Step.state
PENDING = "pending"  # waiting for its target module to be imported
APPLIED = "applied"
SKIPPED = "skipped"  # deliberately not applied (not on CPU, untested verl version, ...)
FAILED = "failed"


@dataclass
class Step:
    name: str
    target: str  # the verl module it hooks, e.g. "verl.utils.distributed"
    state: str = PENDING
    detail: str = ""


@dataclass
class InstallState:
    installed: bool = False
    platform_registered: bool = False
    platform_reason: str = ""
    steps: dict[str, Step] = field(default_factory=dict)

    def record(self, name: str, target: str, state: str, detail: str = "") -> None:
        step = self.steps.setdefault(name, Step(name, target))
        step.state, step.detail = state, detail


STATE = InstallState()
