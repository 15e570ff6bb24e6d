"""verl 0.9.1 on a CPU-only machine: platform, engines, the ``hfcpu`` rollout, two guarded patches.

``install()`` is called from the ``verl.plugins`` entry point (``rftt_plugin.integration.plugin``)
in every process that imports verl. It must stay cheap: it registers the CPU platform (only when
torch sees no CUDA/NPU device and ``VERL_PLATFORM`` does not say otherwise) and arranges
post-import hooks; everything else runs when verl itself imports the modules concerned
(:mod:`rftt_plugin.cpu.registry` lists them). Nothing here imports transformers, Ray or the FSDP
engine.

``status()`` reports what happened, for ``rftt doctor``.

Blocker numbers (B1..B9) refer to the table in ``docs/dry-run-cpu.md``; the dry-run overlay is
``rftt_plugin/config/dryrun/cpu.yaml`` and the launcher ``rftt dry-run``.
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    """Register the CPU platform (if this host has no accelerator) and arrange the deferred steps."""
    from rftt_plugin.cpu.state import STATE

    if STATE.installed:
        return
    from rftt_plugin.cpu import platform, registry

    STATE.platform_registered, STATE.platform_reason = platform.register()
    if STATE.platform_registered:
        registry.install_hooks()
    else:  # an accelerator host: leave verl exactly as it is
        registry.skip_all(f"CPU platform not registered: {STATE.platform_reason}")
    STATE.installed = True


def status(probe: bool = False) -> dict[str, Any]:
    """What the CPU support did in this process.

    ``probe=True`` first imports the verl modules the deferred steps wait for (a few seconds), so
    every step reports its final state instead of ``pending``.
    """
    import importlib
    import sys

    from rftt_plugin import import_hooks as hooks
    from rftt_plugin.cpu import compat
    from rftt_plugin.cpu.state import STATE

    if probe:
        importlib.import_module("verl")
        for name in sorted({step.target for step in STATE.steps.values()}):
            importlib.import_module(name)
    platform_active = None
    platform_name = None
    if "verl" in sys.modules:
        try:
            from verl.plugin.platform import get_platform

            platform_name = get_platform().device_name
            platform_active = platform_name == "cpu"
        except Exception as exc:  # report, do not raise: this feeds a diagnostics table
            platform_name = f"error: {exc}"
    version = compat.verl_version() if "verl" in sys.modules else None
    return {
        "installed": STATE.installed,
        "platform_registered": STATE.platform_registered,
        "platform_reason": STATE.platform_reason,
        "platform": platform_name,
        "platform_active": platform_active,
        "verl_version": version,
        "verl_version_tested": compat.version_is_tested(version) if version else None,
        "tested_verl_versions": list(compat.TESTED_VERL_VERSIONS),
        "steps": {name: {"target": s.target, "state": s.state, "detail": s.detail} for name, s in STATE.steps.items()},
        "patches_applied": {
            name: s.state == "applied" for name, s in STATE.steps.items() if name.startswith(("B3", "B8"))
        },
        "pending_hooks": hooks.pending(),
    }
