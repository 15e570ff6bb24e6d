"""The model spec of the three model-driven jobs: one fingerprint (what decides outputs, not how
fast they come), the device choice, and an engine that is built once and only when asked for."""

from __future__ import annotations

import hashlib
import json

import pytest

from rftt_plugin.jobs.model import EngineHandle, ModelSpec


@pytest.fixture
def ckpt(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "toy"}))
    (d / "tokenizer_config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"w" * 100)
    return d


def _digest(d) -> str:
    """The checkpoint digest written out by hand: sha256 over 'name\\0sha256:<16 hex>\\n' per file, sorted."""
    h = hashlib.sha256()
    files = sorted(p for p in d.iterdir())
    for p in files:
        h.update(f"{p.name}\0sha256:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}\n".encode())
    return f"sha256:{h.hexdigest()[:16]} ({len(files)} files)"


def test_hf_fingerprint_holds_the_weights_and_dtype_but_not_the_device(ckpt):
    cpu = ModelSpec("hf", str(ckpt), device="cpu", dtype="float32", max_batch_size=4).fingerprint()
    assert cpu == {"backend": "hf", "model": str(ckpt), "served_model": None, "tokenizer": None, "dtype": "float32",
                   "weights": _digest(ckpt)}
    assert ModelSpec("hf", str(ckpt), device="cuda:1", dtype="float32", max_batch_size=64).fingerprint() == cpu
    assert ModelSpec("hf", str(ckpt), dtype="bfloat16").fingerprint()["dtype"] == "bfloat16"
    (ckpt / "model.safetensors").write_bytes(b"v" * 100)  # same path, new weights
    assert ModelSpec("hf", str(ckpt), dtype="float32").fingerprint()["weights"] == _digest(ckpt) != cpu["weights"]


def test_served_model_fingerprint_names_the_server_model_and_hashes_the_local_tokenizer(ckpt):
    fp = ModelSpec("openai", str(ckpt), base_url="http://h:1/v1", served_model="m", dtype="auto").fingerprint()
    assert fp == {"backend": "openai", "model": str(ckpt), "served_model": "m", "tokenizer": None, "dtype": None,
                  "weights": None, "tokenizer_files": _digest(ckpt)}
    # the server's address is how to reach it, not what answers
    assert ModelSpec("openai", str(ckpt), base_url="http://h:2/v1", served_model="m").fingerprint() == fp


def test_fake_fingerprint_and_run_fingerprint():
    spec = ModelSpec("fake")
    assert spec.fingerprint() == {"backend": "fake", "model": None, "served_model": None, "tokenizer": None,
                                  "dtype": None, "weights": None}
    assert spec.run_fingerprint(questions=3)["questions"] == 3


def test_with_device_resolves_auto_for_hf_only(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = ModelSpec("hf", "m", device="auto", dtype="auto").with_device("search")
    assert (spec.device, spec.dtype) == ("cpu", "float32")
    assert spec.device_line == "rftt search: device cpu, dtype float32 (auto: no GPU found, dtype for cpu)"
    served = ModelSpec("openai", "m", device="auto", dtype="auto").with_device("search")
    assert (served.device, served.dtype, served.device_line) == ("auto", "auto", None)


def test_engine_is_built_once_and_only_when_asked(monkeypatch):
    from rftt_plugin.backends import engine as engine_module

    calls = []
    real = engine_module.make_engine

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(engine_module, "make_engine", counting)
    handle = EngineHandle(ModelSpec("fake", token_mode="added"))
    assert calls == [] and not handle.built
    first = handle.get()
    assert handle.get() is first and calls == ["fake"] and first.layout is not None


def test_engine_errors_are_one_line_user_errors():
    from rftt_plugin.errors import UserError

    with pytest.raises(UserError, match="--base-url is required") as info:
        EngineHandle(ModelSpec("openai", "m"), hint="check the flags").get(with_tokenizer=False)
    assert info.value.hint == "check the flags"
