"""Fault injection into the tree search (scripted fake backend): a backend call that fails once is
retried and the tree is the healthy one; one that always fails gives a pruned fault, never a leaf
with a made-up reward."""

from __future__ import annotations

import json

from rftt_plugin.backends.fake import FakeBackend, TagScript
from rftt_plugin.backends.fake import FakeVocab
from rftt_plugin.search import FunctionalMCTS, SearchConfig
from rftt_plugin.tag_ids import TagIds
from rftt_plugin.search.tree import Fault
from rftt_plugin.tokens import FunctionalTag as T

Q = "What is 3 + 4 ?"


def engine(**cfg):
    script = TagScript()
    backend = FakeBackend.for_script(script)
    layout = TagIds.from_fake(script.vocab)
    return FunctionalMCTS(backend, layout, SearchConfig(**cfg), grade=script.grade), backend, script


def _nodes(tree):
    out = json.loads(tree.to_json())["nodes"]
    return [{k: v for k, v in n.items()} for n in out]


def _last_open(vocab, ctx):
    opens = [t for t in ctx if vocab.tag_of_open(t) is not None]
    return vocab.tag_of_open(opens[-1]) if opens else None


async def test_a_generation_that_fails_once_is_retried_and_the_tree_is_unchanged():
    healthy, _, _ = engine(iterations=6)
    want = await healthy.search(Q, FakeVocab().prompt_ids(Q))
    mcts, backend, script = engine(iterations=6)
    failed: set[tuple] = set()

    def once(kind, ctx):  # every generate call fails the first time it sees a context
        key = (kind, tuple(ctx))
        if kind == "generate" and key not in failed:
            failed.add(key)
            return "error"
        return None

    backend.inject = once
    got = await mcts.search(Q, FakeVocab().prompt_ids(Q))
    assert failed, "the injection never fired"
    assert _nodes(got.tree) == _nodes(want.tree)
    assert [leaf.reward for leaf in got.leaves] == [leaf.reward for leaf in want.leaves]
    assert got.stats.retries == len(failed) and got.stats.faults == {}


async def test_a_readout_that_fails_once_is_retried():
    mcts, backend, _ = engine(iterations=4)
    seen: set[tuple] = set()

    def once(kind, ctx):
        if kind == "next_token_logprobs" and tuple(ctx) not in seen:
            seen.add(tuple(ctx))
            return "raise"
        return None

    backend.inject = once
    res = await mcts.search(Q, FakeVocab().prompt_ids(Q))
    assert len(res.leaves) == 4 and res.stats.faults == {}
    assert res.stats.retries == len(seen) > 0


async def test_a_step_that_always_fails_is_a_pruned_fault_not_a_trained_leaf():
    mcts, backend, script = engine(iterations=8, step_retries=2)
    vocab = script.vocab
    calls = {"n": 0}

    def always(kind, ctx):  # every <analyze> step fails, however often it is retried
        if kind == "generate" and _last_open(vocab, ctx) is T.ANALYZE:
            calls["n"] += 1
            return "raise"
        return None

    backend.inject = always
    res = await mcts.search(Q, FakeVocab().prompt_ids(Q))
    tree = res.tree
    faulted = [n for n in tree.nodes if n.fault]
    assert faulted and all(n.tag is T.ANALYZE and n.fault == "step_error" for n in faulted)
    assert calls["n"] == 3 * len(faulted)  # 1 try + 2 retries each
    for n in faulted:
        assert n.reward is None and n.N == 0 and n.Q == 0.0  # nothing backed up
        assert n.id not in tree[n.parent].children            # selection can never return to it
    # faithful mode: iteration i is consumer i's path; a faulted iteration is a Fault slot
    slots = res.session_slots()
    assert len(slots) == 8 == len(tree.iterations)
    faults = [s for s in slots if isinstance(s, Fault)]
    assert [f.iteration for f in faults] == [i for i, it in enumerate(tree.iterations) if it.fault]
    assert all(f.cause == "step_error" and "injected" in f.error for f in faults)
    assert len(res.leaves) == 8 - len(faults)
    assert not {leaf.leaf_id for leaf in res.leaves} & {n.id for n in faulted}
    assert tree.root.N == len(res.leaves)  # back-ups: exactly the emitted leaves
    assert res.stats.faults == {"step_error": len(faults)} and res.stats.retries == 2 * len(faulted)


async def test_distinct_leaves_search_on_past_faults():
    mcts, backend, script = engine(iterations=4, distinct_leaves=True)
    vocab = script.vocab
    backend.inject = lambda kind, ctx: "raise" if kind == "generate" and _last_open(vocab, ctx) is T.ANALYZE else None
    res = await mcts.search(Q, FakeVocab().prompt_ids(Q))
    assert res.stats.faults.get("step_error", 0) >= 1
    assert all(not isinstance(s, Fault) for s in res.session_slots())  # faults are not slots here
    assert len(res.leaves) == 4


async def test_root_whose_every_branch_faults_ends_the_search_with_an_error():
    mcts, backend, _ = engine(iterations=8)
    backend.inject = lambda kind, ctx: "error" if kind == "generate" else None
    res = await mcts.search(Q, FakeVocab().prompt_ids(Q))
    assert res.leaves == []
    assert "every branch of the root faulted" in res.tree.meta["error"]


async def test_views_show_pruned_faults_as_not_trained():
    from rftt_plugin.tree_view.render import render_html, render_text

    mcts, backend, script = engine(iterations=8)
    vocab = script.vocab
    backend.inject = lambda kind, ctx: "raise" if kind == "generate" and _last_open(vocab, ctx) is T.ANALYZE else None
    tree = (await mcts.search(Q, FakeVocab().prompt_ids(Q))).tree
    faulted = [n for n in tree.nodes if n.fault]
    assert faulted
    text = render_text(tree)
    for n in faulted:
        line = next(ln for ln in text.splitlines() if f"#{n.id} " in ln)
        assert "[fault: step_error, not trained]" in line and "r=none" in line
    assert "fault: step_error</span>" in render_html(tree)
