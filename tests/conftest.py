"""Shared fixtures: tiny offline models (built once per session, in seconds)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Random Qwen2-style causal LM + byte-level BPE tokenizer with a chat template."""
    from rftt_plugin.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """Random Llama-style model (untied head) with a Metaspace BPE tokenizer."""
    from rftt_plugin.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), arch="llama")


@pytest.fixture(scope="session")
def tiny_padded_dir(tmp_path_factory):
    """Qwen2.5-style: embedding matrix padded beyond the tokenizer's vocabulary."""
    from rftt_plugin.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_padded"), padded_vocab=576)


@pytest.fixture(scope="session")
def shared_data_dir():
    path = os.path.abspath(SHARED_DATA)
    if not os.path.isdir(path):
        pytest.fail(f"../shared/data not found at {path}: tests need the shared benchmark files")
    return path


@pytest.fixture(scope="session")
def prepared_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny Qwen2 model with the 16 functional tokens added (`rftt prepare-model`)."""
    from rftt_plugin.prepare import prepare_model

    out = tmp_path_factory.mktemp("tiny_prepared")
    prepare_model(str(tiny_model_dir), str(out), overwrite=True, progress=False, log=lambda _m: None)
    return out


@pytest.fixture(scope="session")
def warm_model_dir(tmp_path_factory, prepared_model_dir):
    """The prepared tiny model after a short CPU warm-up on synthetic tagged arithmetic: it writes
    well-formed tagged solutions with (mostly wrong) boxed answers, so rewards vary."""
    from rftt_plugin.demo.warmup import warmed_arithmetic_model

    out = tmp_path_factory.mktemp("tiny_warm")
    warmed_arithmetic_model(str(prepared_model_dir), str(out), steps=300, log=None)
    return out
