"""The CPU platform: selection, version-gated patches of verl, post-import hooks (cpu/platform.py, cpu/patches.py, import_hooks.py)."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest
import torch

from rftt_plugin import import_hooks as hooks
from rftt_plugin.cpu import compat, patches
from rftt_plugin.cpu.compat import PatchSignatureError
from rftt_plugin.cpu.platform import CPUPlatformMethods, decide_registration, platform_class

# The CPU platform is only selected on hosts without an accelerator.
cpu_only_host = pytest.mark.skipif(torch.cuda.is_available(), reason="host has CUDA: verl keeps its own platform")


# ---------------------------------------------------------------------------------------------
# Platform selection
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, cuda, npu, expected",
    [
        ("", False, False, True),        # CPU-only host: register
        ("", True, False, False),        # CUDA visible: leave verl alone
        ("", False, True, False),        # NPU visible
        ("cpu", True, False, True),      # VERL_PLATFORM wins, even with a GPU
        ("nvidia", False, False, False),  # VERL_PLATFORM wins the other way
        ("  CPU ", False, False, True),
    ],
)
def test_decide_registration(env, cuda, npu, expected):
    ok, reason = decide_registration(env, cuda, npu)
    assert ok is expected and reason


@cpu_only_host
def test_cpu_platform_steps_aside_for_an_available_accelerator(monkeypatch):
    import verl  # noqa: F401
    from verl.plugin.platform.platform_manager import PlatformRegistry
    from verl.plugin.platform.platform_base import PlatformBase

    PlatformCPU = platform_class()
    assert PlatformCPU().is_platform_available(use_smi_check=True)  # this host: no accelerator

    class FakeAccelerator(CPUPlatformMethods, PlatformBase):
        pass

    class Present(PlatformBase):  # only the probe matters here
        def is_platform_available(self, use_smi_check=False):
            return True

    Present.__abstractmethods__ = frozenset()
    monkeypatch.setitem(PlatformRegistry._platforms, "fakeacc", Present)
    assert not PlatformCPU().is_platform_available(use_smi_check=True)
    monkeypatch.setitem(PlatformRegistry._platforms, "fakeacc", FakeAccelerator)  # CPU-like: ignored
    assert PlatformCPU().is_platform_available(use_smi_check=True)


@cpu_only_host
def test_platform_resolves_to_cpu_and_env_override_is_respected(monkeypatch):
    import verl  # noqa: F401
    from verl.plugin.platform import get_platform

    from rftt_plugin.cpu import platform

    assert get_platform().device_name == "cpu"
    assert get_platform().communication_backend_name() == "gloo"
    assert get_platform().current_device() == "cpu"
    assert get_platform().device_module.is_available() is False
    monkeypatch.setenv("VERL_PLATFORM", "nvidia")
    assert platform.register()[0] is False


def test_cpu_device_module_explains_missing_calls():
    from rftt_plugin.cpu.platform import CpuDeviceModule

    with pytest.raises(AttributeError, match="CPU platform"):
        CpuDeviceModule().get_device_properties(0)
    free, total = CpuDeviceModule().mem_get_info()
    assert 0 < free <= total


# ---------------------------------------------------------------------------------------------
# Version gate and guarded patches
# ---------------------------------------------------------------------------------------------


def test_version_gate(monkeypatch):
    monkeypatch.delenv(compat.UNTESTED_ENV, raising=False)
    assert compat.private_patches_allowed("0.9.1")[0]
    allowed, reason = compat.private_patches_allowed("0.10.0")
    assert not allowed and compat.UNTESTED_ENV in reason
    monkeypatch.setenv(compat.UNTESTED_ENV, "apply")
    assert compat.private_patches_allowed("0.10.0")[0]


def _fake_distributed(ray_sig="timeout_second=None, backend=None", plain_sig="timeout_second=36000"):
    ns: dict = {"calls": []}
    exec(textwrap.dedent(f"""
        def initialize_global_process_group_ray({ray_sig}):
            calls.append(locals())
        def initialize_global_process_group({plain_sig}):
            calls.append("plain")
    """), ns)
    module = types.ModuleType("fake_distributed")
    module.initialize_global_process_group_ray = ns["initialize_global_process_group_ray"]
    module.initialize_global_process_group = ns["initialize_global_process_group"]
    return module, ns["calls"]


def test_b3_forces_gloo_and_keeps_explicit_backends():
    module, calls = _fake_distributed()
    patches.apply_b3(module)
    module.initialize_global_process_group_ray(timeout_second=5)
    module.initialize_global_process_group_ray(backend="cpu:gloo")
    assert calls == [{"timeout_second": 5, "backend": "gloo"}, {"timeout_second": None, "backend": "cpu:gloo"}]
    assert patches.apply_b3(module) == "already applied"


@pytest.mark.parametrize("ray_sig, plain_sig", [
    ("timeout_second=None, backend=None, extra=None", "timeout_second=36000"),
    ("timeout=None, backend=None", "timeout_second=36000"),
    ("timeout_second=None, backend=None", "timeout_second=36000, backend=None"),
])
def test_b3_refuses_on_signature_mismatch(ray_sig, plain_sig):
    module, _ = _fake_distributed(ray_sig, plain_sig)
    original = module.initialize_global_process_group_ray
    with pytest.raises(PatchSignatureError, match="rftt_plugin"):
        patches.apply_b3(module)
    assert module.initialize_global_process_group_ray is original  # untouched


def test_b8_unpins_and_keeps_isinstance():
    from torch.distributed.fsdp import CPUOffloadPolicy

    module = types.SimpleNamespace(CPUOffloadPolicy=CPUOffloadPolicy)
    patches.apply_b8(module)
    policy = module.CPUOffloadPolicy(pin_memory=True)
    assert policy.pin_memory is False and isinstance(policy, CPUOffloadPolicy)


def test_b8_refuses_on_signature_mismatch():
    class Policy:
        def __init__(self, pin_memory=True, offload_grads=False):
            pass

    module = types.SimpleNamespace(CPUOffloadPolicy=Policy)
    with pytest.raises(PatchSignatureError):
        patches.apply_b8(module)
    assert module.CPUOffloadPolicy is Policy


def test_untested_version_skips_patch_with_warning(monkeypatch, caplog):
    from rftt_plugin.cpu import registry
    from rftt_plugin.cpu.state import STATE

    module, _ = _fake_distributed()
    original = module.initialize_global_process_group_ray
    monkeypatch.setattr(registry, "private_patches_allowed", lambda: (False, "verl 9.9 is not a tested version"))
    fake = patches.Patch("B3-test", "fake_distributed", patches.apply_b3)
    with caplog.at_level("WARNING", logger="rftt_plugin.cpu"):
        registry._run_patch(fake, module)
    assert module.initialize_global_process_group_ray is original
    assert STATE.steps["B3-test"].state == "skipped" and "tested" in caplog.text
    del STATE.steps["B3-test"]


def test_deferred_steps_only_act_on_the_cpu_platform(monkeypatch):
    from rftt_plugin.cpu import platform, registry
    from rftt_plugin.cpu.state import STATE

    calls = []
    step = registry._only_on_cpu("probe-step", "some.module", lambda m: calls.append(m))
    monkeypatch.setattr(registry, "_platform_is_cpu", lambda: (False, "platform is nvidia"))
    step("module")
    assert calls == [] and STATE.steps["probe-step"].state == "skipped"

    def broken(_module):
        raise PatchSignatureError("verl changed")

    monkeypatch.setattr(registry, "_platform_is_cpu", lambda: (True, ""))
    with pytest.raises(PatchSignatureError):
        registry._only_on_cpu("probe-step", "some.module", broken)("module")
    assert STATE.steps.pop("probe-step").state == "failed"

    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    monkeypatch.setattr(platform, "accelerators_visible", lambda: (True, False))  # a GPU host
    assert platform.register() == (False, "an accelerator is visible to torch (CUDA or NPU)")


@cpu_only_host
def test_real_patches_applied_in_this_process():
    import verl.utils.distributed as dist
    import verl.workers.engine.fsdp.transformer_impl as impl
    import verl.workers.engine_workers as workers

    from rftt_plugin import cpu

    assert getattr(dist.initialize_global_process_group_ray, patches.PATCHED_MARK) == "B3"
    assert workers.initialize_global_process_group_ray is dist.initialize_global_process_group_ray
    assert getattr(impl.CPUOffloadPolicy, patches.PATCHED_MARK) == "B8"
    status = cpu.status()
    assert status["platform_active"] and status["verl_version_tested"]
    assert all(status["patches_applied"].values()), status["steps"]


# ---------------------------------------------------------------------------------------------
# Post-import hooks
# ---------------------------------------------------------------------------------------------


def test_when_imported_fires_once_after_the_module_body(tmp_path, monkeypatch):
    (tmp_path / "rftt_hook_probe.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    hooks.when_imported("rftt_hook_probe", lambda m: seen.append(m.VALUE))
    assert "rftt_hook_probe" in hooks.pending()
    import rftt_hook_probe  # noqa: F401

    assert seen == [41] and "rftt_hook_probe" not in hooks.pending()
    hooks.when_imported("rftt_hook_probe", lambda m: seen.append(m.VALUE + 1))  # already imported: now
    assert seen == [41, 42]
    sys.modules.pop("rftt_hook_probe")
