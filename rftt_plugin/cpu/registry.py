"""Deferred registrations and patches: what runs when each verl module is first imported.

| verl module (imported by verl itself)          | what we do                                         | API   |
|------------------------------------------------|----------------------------------------------------|-------|
| verl.workers.engine.fsdp.transformer_impl      | FSDP engines registered for device ``cpu`` (B2)    | public `EngineRegistry.register` |
| verl.workers.engine.fsdp.transformer_impl      | patch B8 (tested verl versions only)               | private module global |
| verl.utils.distributed                         | patch B3 (tested verl versions only)               | private module functions |
| verl.workers.rollout.replica                   | replica ``hfcpu`` registered                       | public `RolloutReplicaRegistry.register` |
| verl.workers.rollout.base                      | adapter ``("hfcpu", "async")`` added (B7, tested verl versions only) | private dict `_ROLLOUT_REGISTRY` |

Every step runs only in processes whose verl platform is the CPU one; elsewhere it records itself
as skipped. A failing step logs at ERROR and raises out of the import that triggered it.
"""

from __future__ import annotations

import logging

from rftt_plugin import import_hooks as hooks
from rftt_plugin.cpu.compat import PatchSignatureError, parameter_names, private_patches_allowed
from rftt_plugin.cpu.patches import PATCHES, Patch
from rftt_plugin.cpu.state import APPLIED, FAILED, PENDING, SKIPPED, STATE

logger = logging.getLogger("rftt_plugin.cpu")

ROLLOUT_NAME = "hfcpu"
ADAPTER_FQN = "rftt_plugin.cpu.hfcpu.adapter.HFCPUServerAdapter"
ENGINE_MODULE = "verl.workers.engine.fsdp.transformer_impl"
REPLICA_MODULE = "verl.workers.rollout.replica"
ROLLOUT_BASE_MODULE = "verl.workers.rollout.base"
ENGINES_STEP = "FSDP engines for device cpu"
REPLICA_STEP = "rollout replica hfcpu"
ADAPTER_STEP = "rollout adapter hfcpu"


def _platform_is_cpu() -> tuple[bool, str]:
    try:
        from rftt_plugin.cpu.platform import cpu_platform_active

        return cpu_platform_active(), ""
    except Exception as exc:  # an unresolvable platform is verl's error to raise, not ours
        return False, f"platform could not be resolved: {exc}"


def _only_on_cpu(name: str, target: str, step):
    """Wrap a deferred step so it runs only where verl's platform is ours (GPU processes stay stock)."""

    def guarded(module) -> None:
        on_cpu, why = _platform_is_cpu()
        if not on_cpu:
            STATE.record(name, target, SKIPPED, why or "verl's platform in this process is not cpu")
            return
        try:
            step(module)
        except Exception as exc:
            STATE.record(name, target, FAILED, f"{type(exc).__name__}: {exc}")
            logger.error("rftt_plugin CPU step %r on %s failed: %s", name, target, exc)
            raise

    return guarded


def _run_patch(patch: Patch, module) -> None:
    allowed, reason = private_patches_allowed()
    if not allowed:
        logger.warning("rftt_plugin CPU patch %s: %s", patch.name, reason)
        STATE.record(patch.name, patch.target, SKIPPED, reason)
        return
    STATE.record(patch.name, patch.target, APPLIED, patch.apply(module))


def _register_engines(module) -> None:
    from verl.workers.engine.base import EngineRegistry

    done = []
    for model_type, cls_name in (("language_model", "FSDPEngineWithLMHead"), ("value_model", "FSDPEngineWithValueHead")):
        engine_cls = getattr(module, cls_name)
        try:
            EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"], device="cpu")(engine_cls)
            done.append(f"{model_type}->{cls_name}")
        except AssertionError:  # verl (or another plugin) already registered an engine for cpu: keep it
            done.append(f"{model_type}: already registered")
    STATE.record(ENGINES_STEP, ENGINE_MODULE, APPLIED, ", ".join(done))


def _load_replica():
    from rftt_plugin.cpu.hfcpu.replica import HFCPUReplica

    return HFCPUReplica


def _register_replica(module) -> None:
    module.RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
    STATE.record(REPLICA_STEP, REPLICA_MODULE, APPLIED, "RolloutReplicaRegistry.register('hfcpu')")


def _register_adapter(module) -> None:
    """verl 0.9.1 has no public hook for the worker-side rollout class (B7): add to its private dict."""
    allowed, reason = private_patches_allowed()
    if not allowed:
        logger.warning("rftt_plugin: %s: %s", ADAPTER_STEP, reason)
        STATE.record(ADAPTER_STEP, ROLLOUT_BASE_MODULE, SKIPPED, reason)
        return
    registry = getattr(module, "_ROLLOUT_REGISTRY", None)
    lookup = getattr(module, "get_rollout_class", None)
    problems = []
    if not isinstance(registry, dict) or not all(isinstance(k, tuple) and len(k) == 2 for k in registry):
        problems.append("_ROLLOUT_REGISTRY is not a dict keyed by (name, mode)")
    if lookup is None or parameter_names(lookup) != ("rollout_name", "mode"):
        problems.append("get_rollout_class(rollout_name, mode) changed")
    if problems:
        raise PatchSignatureError(f"verl.workers.rollout.base: {'; '.join(problems)}; update rftt_plugin/cpu/registry.py")
    registry[(ROLLOUT_NAME, "async")] = ADAPTER_FQN
    STATE.record(ADAPTER_STEP, ROLLOUT_BASE_MODULE, APPLIED, f"_ROLLOUT_REGISTRY[('hfcpu', 'async')] = {ADAPTER_FQN}")


def _steps():
    """(name, target module, step) in the order they are arranged."""
    yield ENGINES_STEP, ENGINE_MODULE, _register_engines
    for patch in PATCHES:
        yield patch.name, patch.target, lambda module, _patch=patch: _run_patch(_patch, module)
    yield REPLICA_STEP, REPLICA_MODULE, _register_replica
    yield ADAPTER_STEP, ROLLOUT_BASE_MODULE, _register_adapter


def install_hooks() -> None:
    """Arrange every deferred step; each runs when verl imports its target module."""
    for name, target, step in _steps():
        STATE.record(name, target, PENDING)
        hooks.when_imported(target, _only_on_cpu(name, target, step))


def skip_all(reason: str) -> None:
    """Record every step as skipped (no CPU platform in this process: nothing is arranged)."""
    for name, target, _ in _steps():
        STATE.record(name, target, SKIPPED, reason)
