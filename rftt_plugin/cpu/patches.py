"""The two patches of private verl symbols that CPU training needs (B3 and B8).

Both are applied from a post-import hook on the module that defines the symbol, only when verl's
platform in this process is a CPU one, only on tested verl versions (see ``compat``), and only
after ``inspect.signature`` confirmed the symbol still looks like the one written for.

B3 - process-group backend string (verl/utils/distributed.py:63 and :89 in verl 0.9.1).
    verl builds ``f"cpu:gloo,{device}:{backend}"``; on CPU that is ``"cpu:gloo,cpu:gloo"`` and
    torch raises ``ValueError: Duplicate device type cpu``. No config key reaches the ``backend``
    argument (verl/workers/engine_workers.py:89 passes only ``timeout_second``).
    * ``initialize_global_process_group_ray(timeout_second=None, backend=None)``: wrapped; a
      missing ``backend`` becomes ``"gloo"``, everything else is verl's own code.
    * ``initialize_global_process_group(timeout_second=36000)`` (torchrun path, e.g. verl's SFT
      trainer): replaced by a gloo-only version, because its backend string is built inside.
    Consumers that ``from verl.utils.distributed import ...`` get the patched function because the
    hook runs before the module is returned to its first importer; already-loaded consumers are
    rebound too (``verl.workers.engine_workers``).

B8 - pinned memory in the forward-only FSDP2 engine (verl/workers/engine/fsdp/transformer_impl.py:462).
    The ref model is built with ``CPUOffloadPolicy(pin_memory=True)``; pinning needs an
    accelerator ("Cannot access accelerator device when none is available"). The module global
    ``CPUOffloadPolicy`` is rebound to a subclass that always passes ``pin_memory=False``
    (a subclass, so verl's and torch's ``isinstance`` checks still hold).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from rftt_plugin.cpu.compat import PatchSignatureError, require_signature

PATCHED_MARK = "_rftt_cpu_patch"


@dataclass(frozen=True)
class Patch:
    name: str
    target: str  # module that defines the patched symbol
    apply: Callable[[object], str]  # returns a one-line description of what was done


# ---------------------------------------------------------------------------------------------
# B3
# ---------------------------------------------------------------------------------------------

RAY_PG_PARAMS = ("timeout_second", "backend")
TORCHRUN_PG_PARAMS = ("timeout_second",)
PG_CONSUMERS = ("verl.workers.engine_workers",)


def _gloo_ray_wrapper(original):
    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        # verl's default backend string duplicates the cpu device on CPU; gloo covers CPU tensors.
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    setattr(initialize_global_process_group_ray, PATCHED_MARK, "B3")
    return initialize_global_process_group_ray


def _gloo_torchrun_replacement(original):
    @functools.wraps(original)
    def initialize_global_process_group(timeout_second=36000):
        import torch.distributed

        # Same contract as verl's: init from the torchrun env, return (local_rank, rank, world_size).
        # Only the backend differs, and there is no device to select afterwards.
        torch.distributed.init_process_group(
            backend="gloo",
            timeout=timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    setattr(initialize_global_process_group, PATCHED_MARK, "B3")
    return initialize_global_process_group


def apply_b3(dist_module) -> str:
    ray_fn = dist_module.initialize_global_process_group_ray
    plain_fn = dist_module.initialize_global_process_group
    if getattr(ray_fn, PATCHED_MARK, None):
        return "already applied"
    require_signature(ray_fn, RAY_PG_PARAMS, "verl.utils.distributed.initialize_global_process_group_ray")
    require_signature(plain_fn, TORCHRUN_PG_PARAMS, "verl.utils.distributed.initialize_global_process_group")
    new_ray_fn = _gloo_ray_wrapper(ray_fn)
    dist_module.initialize_global_process_group_ray = new_ray_fn
    dist_module.initialize_global_process_group = _gloo_torchrun_replacement(plain_fn)
    rebound = []
    for consumer_name in PG_CONSUMERS:  # only matters if a consumer was imported before the hook
        consumer = sys.modules.get(consumer_name)
        if consumer is not None and getattr(consumer, "initialize_global_process_group_ray", None) is ray_fn:
            consumer.initialize_global_process_group_ray = new_ray_fn
            rebound.append(consumer_name)
    extra = f"; rebound in {', '.join(rebound)}" if rebound else ""
    return "process-group backend forced to gloo (initialize_global_process_group[_ray])" + extra


# ---------------------------------------------------------------------------------------------
# B8
# ---------------------------------------------------------------------------------------------

OFFLOAD_POLICY_PARAMS = ("pin_memory",)


def _unpinned_policy_class(base):
    class CPUOffloadPolicyNoPin(base):
        """torch's CPUOffloadPolicy that never pins memory (no accelerator to pin for)."""

        def __init__(self, pin_memory: bool = True):
            super().__init__(pin_memory=False)

    CPUOffloadPolicyNoPin.__qualname__ = CPUOffloadPolicyNoPin.__name__
    setattr(CPUOffloadPolicyNoPin, PATCHED_MARK, "B8")
    return CPUOffloadPolicyNoPin


def apply_b8(impl_module) -> str:
    current = getattr(impl_module, "CPUOffloadPolicy", None)
    if current is None:
        raise PatchSignatureError(
            "verl.workers.engine.fsdp.transformer_impl.CPUOffloadPolicy is missing or None "
            "(torch without FSDP2?); the B8 patch cannot apply"
        )
    if getattr(current, PATCHED_MARK, None):
        return "already applied"
    require_signature(current, OFFLOAD_POLICY_PARAMS, "verl.workers.engine.fsdp.transformer_impl.CPUOffloadPolicy")
    impl_module.CPUOffloadPolicy = _unpinned_policy_class(current)
    return "FSDP2 CPUOffloadPolicy forced to pin_memory=False in the FSDP engine"


B3 = Patch("B3 process-group backend", "verl.utils.distributed", apply_b3)
B8 = Patch("B8 unpinned offload policy", "verl.workers.engine.fsdp.transformer_impl", apply_b8)
PATCHES: tuple[Patch, ...] = (B3, B8)
