"""A ``cpu`` platform for verl's platform registry (blocker B1, docs/dry-run-cpu.md).

verl 0.9.1 resolves its platform once per process (verl/plugin/platform/platform_manager.py:83-146):
``VERL_PLATFORM`` if set, else the first registered platform whose
``is_platform_available(use_smi_check=True)`` is true, else ``nvidia``. It has no CPU platform,
so on a CPU-only host every process falls back to CUDA and dies in ``torch.cuda``.

Selection rules (the same in every Ray process, because each one imports verl and this plugin):

* ``VERL_PLATFORM`` is set: it wins. We register the class only when it names ``cpu``.
* otherwise we register the class only when torch sees neither a CUDA nor an NPU device, and the
  class reports itself available only when no *other* registered platform does (so a CPU-only
  Ray actor on a GPU host, where ``torch.cuda.is_available()`` is false but ``nvidia-smi``
  works, still resolves to ``nvidia``, which verl probes first).

What the platform says, and why:

* ``device_name == "cpu"``; ``current_device()`` returns ``"cpu"`` (not an int) because verl
  moves tensors with ``.to(get_device_id())`` throughout.
* communication backend ``gloo``.
* Ray resource name ``GPU``: verl's resource pool insists on GPU/NPU bundles
  (verl/single_controller/ray/base.py:146-148, 226-242, blocker B4), so the dry run declares
  *logical* GPUs with ``ray_init.num_gpus``. Ray then exports ``CUDA_VISIBLE_DEVICES`` to the
  actors, which CPU torch ignores.
* ``device_module`` is a ``torch.cuda`` look-alike over ``torch.cpu`` whose memory and cache
  calls are no-ops and whose ``is_available()`` is false, so verl's GPU-memory helpers skip.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

PLATFORM_NAME = "cpu"


class CpuDeviceModule:
    """What verl calls on ``get_torch_device()``, answered for a host without an accelerator."""

    # Streams, events and device bookkeeping exist on torch.cpu already.
    Stream = torch.cpu.Stream
    Event = torch.cpu.Event

    def __init__(self) -> None:
        self._cpu = torch.cpu

    # -- device bookkeeping -------------------------------------------------------------------
    def is_available(self) -> bool:
        # "Is there an accelerator?" No: verl's memory helpers (aggressive_empty_cache,
        # get_memory_info, ...) then skip instead of calling CUDA-only allocator APIs.
        return False

    def is_initialized(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def current_device(self) -> str:
        return "cpu"

    def set_device(self, device: Any) -> None:
        return None

    def synchronize(self, device: Any = None) -> None:
        return None

    def get_device_name(self, device: Any = None) -> str:
        return "cpu"

    def current_stream(self, device: Any = None):
        return self._cpu.current_stream(device)

    def stream(self, stream: Any):
        return self._cpu.stream(stream)

    # -- RNG -------------------------------------------------------------------------------------
    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def get_rng_state(self, device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    # -- memory: there is no device allocator to query or release -------------------------------
    def empty_cache(self) -> None:
        return None

    def ipc_collect(self) -> None:
        return None

    def memory_allocated(self, device: Any = None) -> int:
        return 0

    def max_memory_allocated(self, device: Any = None) -> int:
        return 0

    def memory_reserved(self, device: Any = None) -> int:
        return 0

    def max_memory_reserved(self, device: Any = None) -> int:
        return 0

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        return None

    def reset_accumulated_memory_stats(self, device: Any = None) -> None:
        return None

    def set_per_process_memory_fraction(self, fraction: float, device: Any = None) -> None:
        return None

    def memory_stats(self, device: Any = None) -> dict:
        return {}

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        """(free, total) bytes of host memory: the closest thing to device memory here."""
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page

    def __getattr__(self, name: str):
        raise AttributeError(
            f"verl asked the CPU platform's device module for torch.cuda.{name}, which rftt_plugin's CPU "
            f"platform does not emulate (rftt_plugin/cpu/platform.py). This code path needs an accelerator."
        )


_DEVICE_MODULE = CpuDeviceModule()


def other_platform_available(use_smi_check: bool) -> bool:
    """True when any registered platform other than ours reports itself available."""
    from verl.plugin.platform.platform_manager import PlatformRegistry

    for name in PlatformRegistry.registered_names():
        cls = PlatformRegistry.get(name)
        if name == PLATFORM_NAME or cls is None or issubclass(cls, CPUPlatformMethods):
            continue
        try:
            if cls().is_platform_available(use_smi_check=use_smi_check):
                return True
        except Exception:  # a broken probe must not make us claim the host
            continue
    return False


class CPUPlatformMethods:
    """The CPU platform's behaviour; :func:`platform_class` combines it with verl's ``PlatformBase``.

    Kept free of a module-level verl import: importing this module must not start ``import verl``,
    whose plugin loading calls back into ``install()`` while this module is half-initialised.
    """

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self):
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return not other_platform_available(use_smi_check)

    def current_device(self):  # noqa: D102 - see module docstring: "cpu", not an index
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index=None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None  # no caching allocator to configure (expandable_segments etc.)

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # what Ray sets for the logical GPUs; CPU torch ignores it

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"  # logical GPUs, see module docstring (B4)

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self):
        return None


_PLATFORM_CLASS = None


def platform_class() -> type:
    """verl's ``PlatformBase`` subclass for CPU (created on first use, then the same class)."""
    global _PLATFORM_CLASS
    if _PLATFORM_CLASS is None:
        from verl.plugin.platform.platform_base import PlatformBase

        _PLATFORM_CLASS = type("PlatformCPU", (CPUPlatformMethods, PlatformBase), {
            "__module__": __name__,
            "__qualname__": "PlatformCPU",
            "__doc__": "verl platform for hosts without CUDA/NPU: gloo, logical GPUs, no-op device memory.",
        })
    return _PLATFORM_CLASS


def __getattr__(name: str):
    # ``rftt_plugin.cpu.platform.PlatformCPU`` resolves (pickle finds classes by module + name).
    if name == "PlatformCPU":
        return platform_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def decide_registration(env_platform: str, cuda_available: bool, npu_available: bool) -> tuple[bool, str]:
    """Whether to register the CPU platform in this process, and why (pure: unit-tested)."""
    env_platform = (env_platform or "").strip().lower()
    if env_platform:
        if env_platform == PLATFORM_NAME:
            return True, "VERL_PLATFORM=cpu"
        return False, f"VERL_PLATFORM={env_platform} wins"
    if cuda_available or npu_available:
        return False, "an accelerator is visible to torch (CUDA or NPU)"
    return True, "no CUDA/NPU device visible to torch"


def accelerators_visible() -> tuple[bool, bool]:
    """(cuda, npu) as torch sees them; reuses verl's flags when verl.utils.device is loaded."""
    import sys

    device_utils = sys.modules.get("verl.utils.device")
    if device_utils is not None and hasattr(device_utils, "is_cuda_available"):
        return bool(device_utils.is_cuda_available), bool(device_utils.is_npu_available)
    npu = hasattr(torch, "npu") and bool(getattr(torch.npu, "is_available", lambda: False)())
    return torch.cuda.is_available(), npu


def register() -> tuple[bool, str]:
    """Register the CPU platform class under ``cpu`` if the selection rules say so.

    Decides first and touches verl's registry only when registering, so a host with an
    accelerator never depends on this code working.
    """
    cuda, npu = accelerators_visible()
    ok, reason = decide_registration(os.environ.get("VERL_PLATFORM", ""), cuda, npu)
    if not ok:
        return False, reason
    from verl.plugin.platform.platform_manager import PlatformRegistry

    cls = platform_class()
    existing = PlatformRegistry.get(PLATFORM_NAME)
    if existing is not None and existing is not cls:
        # A later verl (or another plugin) ships its own "cpu" platform: prefer it, do not override.
        return False, f"a 'cpu' platform is already registered ({existing.__module__}.{existing.__name__})"
    PlatformRegistry.register(platform=PLATFORM_NAME)(cls)
    return True, reason


def cpu_platform_active() -> bool:
    """Whether verl's platform in this process is a CPU one (resolves it if not yet resolved)."""
    from verl.plugin.platform import get_platform

    return get_platform().device_name == "cpu"
