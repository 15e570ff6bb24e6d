"""bench/rollout.py's accounting (issues 14 and 28), on hand-worked calls: where uncached prompt tokens
come from (first touch, KV block granularity, cache reads skipped), the round trips of a tree, the
read-out requests per expansion, and the equal-work numbers (per leaf token)."""

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

    from rftt_plugin.tiny_model import build_tiny_model

    tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "tiny"))
    _, short = bench.build_prompts(tok, 3, 0)
    questions, long = bench.build_prompts(tok, 3, 200)
    assert questions == bench.QUESTIONS[:3]
    for s, lng in zip(short, long):
        assert 200 <= len(lng) - len(s) <= 200 + 40  # whole filler words, plus "Notes: " and the newline
    assert len({tuple(p[:60]) for p in long}) == 3  # each question its own filler


def test_call_kinds_and_requests_per_expansion(bench):
    kind = bench.Recorder.kind
    assert kind({"logprob_token_ids": [1, 2], "logprobs": False}) == "readout ids (cached)"
    assert kind({"rftt_top_logprobs": 20}) == "readout top-k (cached)"
    assert kind({"rftt_top_logprobs": 4, "allowed_token_ids": [1]}) == "readout allowed (cached)"
    assert kind({"prompt_logprobs": 0}) == "readout k=0"
    assert kind({"max_tokens": 9, "ignore_eos": True}) == "chain"
    assert kind({"stop_token_ids": [3]}) == "step" and kind({"max_tokens": 5}) == "grpo"
    before = {"readout top-k (cached)": 26, "readout allowed (cached)": 26, "step": 68}
    after = {"readout ids (cached)": 26, "step": 68}
    old = {"readout k=20": 26, "readout k=0": 53, "step": 68}
    assert [bench.expansions(k, 20) for k in (before, after, old)] == [26, 26, 26]
    assert [bench.readout_requests(k) for k in (before, after, old)] == [52, 26, 79]


def test_equal_work_per_leaf_token(bench):
    Call, Recorder = bench.Call, bench.Recorder
    tree, chains = Recorder(), Recorder()
    # one tree on a 4-id prompt: a read-out, a 3-id step, a read-out, two 2-id sibling steps (9 generated
    # ids, read-outs' discarded ids included); two leaves of 5 ids each (hand-set path lengths)
    tree.calls = [Call("readout ids (cached)", 4, 0, 1, "t", 0.0, 1.0), Call("step", 5, 4, 3, "t", 1.0, 2.0),
                  Call("readout ids (cached)", 8, 0, 1, "t", 2.0, 3.0), Call("step", 9, 8, 2, "t", 3.0, 4.0),
                  Call("step", 9, 8, 2, "t", 3.0, 4.0)]
    chains.calls = [Call("chain", 4, 0, 5, "c-0", 0.0, 1.0), Call("chain", 4, 0, 5, "c-1", 0.0, 1.0)]
    res = {"leaf_lengths": [[5, 5]], "emitted_leaves": 3, "emitted_leaf_tokens": 15,  # one leaf emitted twice
           "rftt_after": (4.0, tree.summary()), "rftt_after_rec": tree,
           "chains": (1.0, chains.summary()), "chains_rec": chains}
    w = bench.equal_work(res, None)
    assert w["leaf_tokens"] == 10 and w["leaves"] == 2 and w["lengths"] == [5, 5]
    t, c = w["tree"], w["chains"]
    assert (t["generated"], t["gen_per_leaf"], t["gen_per_emitted"]) == (9, 0.9, 9 / 15)
    assert (t["uncached"], t["computed_per_leaf"]) == (35 - 20, (9 + 15) / 10)
    assert (c["gen_per_leaf"], c["computed_per_leaf"], c["rounds"]) == (1.0, 1.8, 1.0)
    assert t["rounds"] == 4.0  # the two sibling steps overlap: one round trip
    assert (t["per_1k"], c["per_1k"]) == (400.0, 100.0)
    assert t["by_kind"] == {"first call of a tree": 0.0, "readout ids (cached)": 0.0, "step": 20 / 23}
    assert c["by_kind"] == {"chain": 0.0}
