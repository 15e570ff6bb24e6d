"""bench/rollout.py's accounting (issue 14), on hand-worked calls: where uncached prompt tokens
come from (first touch, KV block granularity, cache reads skipped) and the round trips of a tree."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest


@pytest.fixture
def bench():
    saved = dict(os.environ)  # the bench sets vLLM/HF environment defaults on import
    spec = importlib.util.spec_from_file_location("bench_rollout", Path(__file__).parent.parent / "bench" / "rollout.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        os.environ.clear()
        os.environ.update(saved)


def test_uncached_tokens_split_into_novel_block_and_other(bench):
    Call, rec = bench.Call, bench.Recorder()
    p10 = tuple(range(1, 11))
    rec.calls = [
        # the tree's first call: 10 new ids, nothing to hit
        Call("readout top-k (cached)", 10, 0, 1, "t", 0.0, 1.0, p10),
        # sent with it, same prompt: vLLM hits the twin's 2 whole 4-id blocks, recomputes ids 9-10
        Call("readout allowed (cached)", 10, 8, 1, "t", 0.0, 1.5, p10),
        # a step on the prompt + 1 new id, generating 20, 21, 22 (22's KV is never computed)
        Call("step", 11, 8, 3, "t", 2.0, 3.0, p10 + (11, 20, 21)),
        # a prompt_logprobs read-out: 15 ids, 13 known, vLLM skipped the cache
        Call("readout k=0", 15, 0, 1, "t", 4.0, 5.0, p10 + (11, 20, 21, 22, 5)),
    ]
    got = rec.breakdown(block=4)
    row = lambda calls, prompt, uncached, novel, block, other: {  # noqa: E731
        "calls": calls, "prompt": prompt, "uncached": uncached, "novel": novel, "block": block, "other": other}
    assert got == {
        "first call of a tree": row(1, 10, 10, 10, 0, 0),
        "readout allowed (cached)": row(1, 10, 2, 0, 2, 0),   # cacheable: 8 = 2 blocks (the 10th id is computed)
        "step": row(1, 11, 3, 1, 2, 0),                       # known 10, cacheable 8
        "readout k=0": row(1, 15, 15, 2, 1, 12),              # known 13, cacheable 12, read none
    }
    summary = rec.summary()
    assert (summary["prompt"], summary["uncached"]) == (46, 30)
    assert bench.Recorder.round_trips(rec.calls) == 3  # the twins share one


def test_long_prompts_are_padded_per_question(bench, tmp_path):
    from transformers import AutoTokenizer

    from rftt_plugin.demo.tiny_model import build_tiny_model

    tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "tiny"))
    _, short = bench.build_prompts(tok, 3, 0)
    questions, long = bench.build_prompts(tok, 3, 200)
    assert questions == bench.QUESTIONS[:3]
    for s, lng in zip(short, long):
        assert 200 <= len(lng) - len(s) <= 200 + 40  # whole filler words, plus "Notes: " and the newline
    assert len({tuple(p[:60]) for p in long}) == 3  # each question its own filler
