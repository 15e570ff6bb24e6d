"""Shared fixtures: tiny offline models (built once per session, in seconds)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = os.path.dirname(os.path.abspath(__file__))
# Small benchmark files written for the tests (a few rows per benchmark, in each public set's
# schema), laid out like a data directory: eval/math500.jsonl, eval/gsm8k_test.jsonl, ...
FIXTURE_DATA = os.path.join(HERE, "fixtures", "data")
# The full public benchmark files, when a copy is at hand: $RFTT_FULL_DATA_DIR (a directory holding
# eval/), else ../shared/data beside the checkout (this project's workplace). A user's clone has
# neither; tests that need the full sets are marked `fulldata` and skip there.
FULL_DATA_ENV = "RFTT_FULL_DATA_DIR"


def full_data_path() -> str | None:
    for cand in (os.environ.get(FULL_DATA_ENV), os.path.join(HERE, "..", "..", "shared", "data")):
        if cand and os.path.isfile(os.path.join(cand, "eval", "math500.jsonl")):
            return os.path.abspath(cand)
    return None


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Random Qwen2-style causal LM + byte-level BPE tokenizer with a chat template."""
    from rftt_plugin.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """Random Llama-style model (untied head) with a Metaspace BPE tokenizer."""
    from rftt_plugin.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), arch="llama")


@pytest.fixture(scope="session")
def tiny_padded_dir(tmp_path_factory):
    """Qwen2.5-style: embedding matrix padded beyond the tokenizer's vocabulary."""
    from rftt_plugin.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_padded"), padded_vocab=576)


@pytest.fixture(scope="session")
def bench_data_dir():
    """tests/fixtures/data: a few rows of each benchmark format (eval/<benchmark file>)."""
    return FIXTURE_DATA


@pytest.fixture(scope="session")
def full_data_dir():
    """The full public benchmark files (a directory holding eval/), or a skip saying why."""
    path = full_data_path()
    if path is None:
        pytest.skip(f"needs the full public benchmark files: set {FULL_DATA_ENV} to a directory holding "
                    "eval/math500.jsonl, gsm8k_test.jsonl, aime24.jsonl, amc23.jsonl, olympiadbench.jsonl")
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
