"""FunctionalMCTS on the scripted fake backend: grammar, ranking, selection order, back-up,
depth cap, duplicates, failures, budget, determinism, exact ids/log-probs, many trees."""

from __future__ import annotations

import asyncio
import json

import pytest

from rftt_plugin.backends.fake import FakeBackend, TagScript
from rftt_plugin.backends.fake import FakeVocab
from rftt_plugin.search import FunctionalMCTS, SearchConfig, SearchRequest, search_many
from rftt_plugin.tag_ids import TagIds
from rftt_plugin.tokens import TAGS, FunctionalTag as T, allowed_next, validate
from tests.helpers import InFlightCounter

Q = "What is 3 + 4 ?"
P = FakeVocab().prompt_ids(Q)  # the prompt ids the caller hands the search


def engine(script: TagScript | None = None, mode: str = "added", **cfg):
    script = script or TagScript()
    backend = FakeBackend.for_script(script)
    layout = TagIds.from_fake(script.vocab, mode=mode)
    return FunctionalMCTS(backend, layout, SearchConfig(token_mode=mode, **cfg), grade=script.grade), backend, script


def strip_wall(d):
    d = json.loads(json.dumps(d))
    d["meta"].pop("wall_s", None)
    return d


async def test_every_node_respects_the_grammar_and_output_paths_validate():
    mcts, backend, script = engine()
    res = await mcts.search(Q, P)
    tree = res.tree
    assert res.stats.leaves == 16 and tree.root.N == 16
    for node in tree.nodes[1:]:
        parent = tree[node.parent]
        assert node.tag in allowed_next(parent.tag, parent.depth, 18)
        assert node.depth == parent.depth + 1
    outputs = [leaf for leaf in res.leaves if leaf.terminal_reason == "output"]
    assert outputs, "the scripted policy should reach <output>"
    for leaf in outputs:
        text = script.vocab.decode(leaf.response_ids[:-1])
        report = validate(text)
        assert report.ok, report.problems
        assert leaf.response_ids[-1] == script.vocab.EOS


async def test_children_are_all_allowed_tags_ranked_by_the_policy():
    mcts, backend, _ = engine()
    tree = (await mcts.search(Q, P)).tree
    layout = mcts.tag_ids
    expanded = [n for n in tree.nodes if n.expanded]
    assert len(expanded) > 3
    for node in expanded:
        kids = tree.children(node)
        assert {k.tag for k in kids} == set(allowed_next(node.tag, node.depth, 18))
        ref = backend.logprobs(tree.context_ids(node.id))
        for rank, kid in enumerate(kids):
            assert kid.rank == rank
            assert kid.prior_logprob == pytest.approx(ref[layout.open_id(kid.tag)], abs=1e-12)
        assert [k.prior_logprob for k in kids] == sorted((k.prior_logprob for k in kids), reverse=True)
        assert sum(k.prior for k in kids) == pytest.approx(1.0)


async def test_leaf_ids_and_logprobs_are_exact():
    """Every response id and log-prob equals what the model computes on prompt + prefix."""
    mcts, backend, script = engine(step_temperature=0.7)
    res = await mcts.search(Q, P)
    layout = mcts.tag_ids
    prompt = script.vocab.prompt_ids(Q)
    close_ids = {layout.close_ids[t][0] for t in TAGS}
    open_ids = {layout.open_id(t) for t in TAGS}
    for leaf in res.leaves:
        assert leaf.prompt_ids == prompt
        ids = leaf.response_ids
        for j, (tok, lp, sampled) in enumerate(zip(ids, leaf.response_logprobs, leaf.sampled_mask)):
            ctx = prompt + ids[:j]
            if sampled:
                assert lp == pytest.approx(backend.logprobs(ctx, 0.7)[tok], abs=1e-9)
            elif tok in open_ids:  # the tag choice: ranking distribution, temperature 1
                assert lp == pytest.approx(backend.logprobs(ctx)[tok], abs=1e-9)
            else:  # newline / EOS inserted by the search
                assert lp == 0.0
        assert [ids[i] for i in leaf.step_ends] == [layout.close_ids[T(t)][0] for t in leaf.tags]
        assert all(ids[i] in close_ids and leaf.sampled_mask[i] == 1 for i in leaf.step_ends)
        assert leaf.loss_mask == [1] * len(ids)
        # The response is exactly the concatenation of the node ids along the path.
        assert ids[:len(ids) - (leaf.terminal_reason == "output")] == res.tree.response_ids(leaf.leaf_id)


async def test_first_iterations_follow_greedy_chain_then_unexplored_root_children():
    mcts, _, _ = engine()
    tree = (await mcts.search(Q, P)).tree
    first = tree.path(tree.iterations[0].leaf)
    for node in first:  # simulation always takes the most probable tag
        assert node.rank == 0
    root_kids = tree.children(tree.root)
    assert len(root_kids) == 4
    # Iterations 2..4 start at the root's unexplored children, most probable first.
    starts = [tree.path(it.leaf)[0].id for it in tree.iterations[:4]]
    assert starts == [k.id for k in root_kids]
    for it in tree.iterations[1:4]:
        for node in tree.path(it.leaf)[1:]:
            assert node.rank == 0


async def test_backed_up_values_match_the_iterations():
    mcts, _, _ = engine()
    tree = (await mcts.search(Q, P)).tree
    for node in tree.nodes:
        through = [it for it in tree.iterations if node.id in {0, *[n.id for n in tree.path(it.leaf)]}]
        assert node.N == len(through)
        assert node.Q == pytest.approx(sum(tree[it.leaf].reward for it in through))
    assert tree.root.N == len(tree.iterations)


async def test_depth_cap_cuts_paths_with_the_configured_reward():
    never_done = {p: {T.NEXT_STEP: 9.0} for p in [None, *TAGS]}
    script = TagScript(preferences=never_done, next_step_decay=0.0)
    mcts, _, _ = engine(script, max_depth=4, cut_reward=-0.5)
    res = await mcts.search(Q, P)
    assert all(n.depth <= 4 for n in res.tree.nodes)
    cut = [leaf for leaf in res.leaves if leaf.terminal_reason == "depth"]
    assert cut and all(leaf.n_steps == 4 and leaf.reward == -0.5 for leaf in cut)
    assert all(leaf.response_ids[-1] != script.vocab.EOS for leaf in cut)  # no EOS after a cut


async def test_faithful_mode_keeps_duplicate_leaves():
    # Depth 2 leaves only 4 + 3 + 2 + 5 = 14 distinct leaves: 16 iterations must repeat some.
    mcts, _, _ = engine(max_depth=2)
    res = await mcts.search(Q, P)
    assert len(res.leaves) == 16 and res.stats.unique_leaves <= 14
    dups = [leaf for leaf in res.leaves if leaf.duplicate]
    assert len(dups) == 16 - res.stats.unique_leaves
    assert res.stats.independent_tokens > res.stats.independent_unique_tokens


async def test_distinct_mode_stops_at_k_distinct_leaves_or_exhaustion():
    mcts, _, _ = engine(max_depth=2, distinct_leaves=True)
    res = await mcts.search(Q, P)
    ids = [leaf.leaf_id for leaf in res.leaves]
    assert len(ids) == len(set(ids)) == 14  # everything the tree has
    assert res.tree.is_exhausted() and len(res.tree.iterations) <= 64
    mcts, _, _ = engine(distinct_leaves=True, iterations=8)
    res = await mcts.search(Q, P)
    assert len({leaf.leaf_id for leaf in res.leaves}) == len(res.leaves) == 8
    guarded, _, _ = engine(max_depth=2, distinct_leaves=True, iterations=16, max_iterations=5)
    assert len((await guarded.search(Q, P)).tree.iterations) == 5


async def test_failed_steps_become_terminal_leaves_with_reasons():
    script = TagScript(failures={T.VERIFY: "raise", T.REFINE: "error", T.SUBQUESTION: "empty",
                                 T.CLARIFY: "no_close", T.ANALYZE: "eos", T.DIRECT_ANSWER: "wrong_close"})
    mcts, _, _ = engine(script, step_max_tokens=16, direct_answer_max_tokens=16)
    res = await mcts.search(Q, P)
    want = {T.VERIFY: "error", T.REFINE: "error", T.SUBQUESTION: "empty", T.CLARIFY: "length",
            T.ANALYZE: "eos", T.DIRECT_ANSWER: "wrong_tag"}
    seen = set()
    for node in res.tree.nodes[1:]:
        if node.generated and node.tag in want:
            assert node.terminal_reason == want[node.tag], (node.tag, node.terminal_reason)
            assert not node.children
            # the policy's spoiled steps are leaves with cut_reward; backend failures are faults
            assert node.reward == (None if want[node.tag] == "error" else 0.0)
            seen.add(node.tag)
    assert seen >= {T.CLARIFY, T.ANALYZE, T.SUBQUESTION}
    errors = [n for n in res.tree.nodes if n.terminal_reason == "error"]
    assert all(n.error and n.fault == "step_error" and n.N == 0 for n in errors)
    # a faulted iteration emits nothing; the others emit one leaf each (faithful: 16 iterations)
    faulted = [it for it in res.tree.iterations if it.fault]
    assert len(res.tree.iterations) == 16 and len(res.leaves) == 16 - len(faulted)
    assert not {leaf.leaf_id for leaf in res.leaves} & {n.id for n in errors}
    assert res.stats.faults == ({"step_error": len(faulted)} if faulted else {})
    length = next(n for n in res.tree.nodes if n.terminal_reason == "length")
    assert length.n_sampled == 16 and length.close_index is None


async def test_ranking_failure_ends_the_branch_and_root_failure_ends_the_search():
    script = TagScript()
    mcts, backend, _ = engine(script)
    vocab = script.vocab

    def fail_after_next_step(kind, ctx):
        last_open = [t for t in ctx if vocab.tag_of_open(t) is not None]
        if kind == "next_token_logprobs" and last_open and vocab.tag_of_open(last_open[-1]) is T.NEXT_STEP:
            return "raise"
        return None

    backend.inject = fail_after_next_step
    res = await mcts.search(Q, P)
    broken = [n for n in res.tree.nodes if n.tag is T.NEXT_STEP and n.generated]
    assert broken and all(n.terminal_reason == "error" and "injected" in n.error for n in broken)
    assert all(n.fault == "step_error" and n.id not in res.tree[n.parent].children for n in broken)  # pruned
    backend.inject = lambda kind, ctx: "raise" if kind == "next_token_logprobs" else None
    res = await mcts.search(Q, P)
    assert res.leaves == [] and "injected" in res.tree.meta["error"]


async def test_budget_bounds_every_response():
    mcts, _, _ = engine(max_response_tokens=40)
    res = await mcts.search(Q, P)
    assert all(len(leaf.response_ids) <= 40 for leaf in res.leaves)
    assert any(leaf.terminal_reason == "budget" for leaf in res.leaves)


async def test_search_is_deterministic_for_a_seed():
    a = (await engine(step_temperature=1.0, seed=5)[0].search(Q, P)).tree.to_dict()
    b = (await engine(step_temperature=1.0, seed=5)[0].search(Q, P)).tree.to_dict()
    c = (await engine(step_temperature=1.0, seed=6)[0].search(Q, P)).tree.to_dict()
    assert strip_wall(a) == strip_wall(b)
    assert strip_wall(a)["nodes"] != strip_wall(c)["nodes"]


async def test_text_mode_ranks_multi_piece_tags_by_sequence_logprob():
    mcts, backend, script = engine(mode="text")
    res = await mcts.search(Q, P)
    tree = res.tree
    node = tree.root
    kids = tree.children(node)
    ctx = tree.context_ids(0)
    for kid in kids:
        seg = mcts.tag_ids.open_segments[kid.tag]
        want = backend.logprobs(ctx)[seg[0]] + backend.logprobs(ctx + [seg[0]])[seg[1]]
        assert kid.prior_logprob == pytest.approx(want, abs=1e-9)
    assert any(leaf.terminal_reason == "output" for leaf in res.leaves)
    with pytest.raises(ValueError):
        FunctionalMCTS(backend, mcts.tag_ids, SearchConfig(token_mode="added"))


async def test_grader_may_be_async_and_may_fail():
    async def slow_grade(text):
        await asyncio.sleep(0)
        return 0.75

    mcts, _, _ = engine()
    res = await mcts.search(Q, P, grade=slow_grade)
    assert {leaf.reward for leaf in res.leaves if leaf.terminal_reason == "output"} == {0.75}

    def broken(text):
        raise RuntimeError("checker died")

    res = await mcts.search(Q, P, grade=broken)
    outs = [n for n in res.tree.nodes if n.terminal_reason == "output"]
    # no made-up reward: the leaf is a fault, backs up nothing and is never emitted
    assert outs and all(n.reward is None and n.fault == "grade_error" and n.error.startswith("grade:") for n in outs)
    assert all(n.N == 0 and n.Q == 0.0 for n in outs)
    assert not [leaf for leaf in res.leaves if leaf.terminal_reason == "output"]

    class NoVerdict(Exception):
        cause = "grade_timeout"

    def timed_out(text):
        raise NoVerdict("the check timed out")

    res = await mcts.search(Q, P, grade=timed_out)
    assert res.stats.faults.get("grade_timeout", 0) >= 1 and set(res.stats.faults) == {"grade_timeout"}


async def test_search_many_bounds_trees_in_flight_and_reports_progress():
    mcts, backend, script = engine(iterations=4)
    backend.latency_s = 0.001
    counter = InFlightCounter(backend)
    done = []
    questions = [SearchRequest(f"question number {i}", gold=str(i), id=f"q{i}") for i in range(7)]
    golds = []

    def grade(text, gold):
        golds.append(gold)
        return 1.0

    results = await search_many(questions, mcts, grade=grade, max_concurrent_trees=3,
                                on_result=lambda i, r: done.append(i), prompt=script.vocab.prompt_ids)
    assert [r.tree.question for r in results] == [q.question for q in questions]
    assert [r.tree.prompt_ids for r in results] == [script.vocab.prompt_ids(q.question) for q in questions]
    assert [r.tree.meta["id"] for r in results] == [q.id for q in questions]
    assert sorted(done) == list(range(7)) and 1 < counter.peak <= 3
    assert set(golds) <= {str(i) for i in range(7)} and golds


async def test_search_many_takes_the_callers_prompt_ids():
    mcts, _, _ = engine(iterations=2)
    own = [3, 1, 4, 1, 5]
    res = await search_many([SearchRequest("a", prompt_ids=own), "b"], mcts, prompt=lambda q: [7, 7])
    assert res[0].tree.prompt_ids == own and res[1].tree.prompt_ids == [7, 7]
    with pytest.raises(ValueError, match="request 1 .*'b'.* no prompt_ids"):
        await search_many([SearchRequest("a", prompt_ids=own), "b"], mcts)


def test_config_mapping_rejects_unknown_keys():
    cfg = SearchConfig.from_mapping({"iterations": 8, "uct_c": 1.5, "distinct_leaves": True})
    assert cfg.iterations == 8 and cfg.iteration_limit == 32
    with pytest.raises(ValueError, match="unknown"):
        SearchConfig.from_mapping({"iteratons": 8})
    with pytest.raises(ValueError):
        SearchConfig(token_mode="bpe")


async def test_min_tag_prior_prunes_unlikely_tags_but_keeps_the_best():
    full, _, _ = engine()
    pruned, _, _ = engine(min_tag_prior=0.2)
    a, b = (await full.search(Q, P)).tree, (await pruned.search(Q, P)).tree
    expanded = [n for n in b.nodes if n.expanded]
    assert expanded
    for node in expanded:
        kids = b.children(node)
        assert kids and kids[0].rank == 0
        assert all(k.prior >= 0.2 for k in kids[1:])
    assert sum(len(n.children) for n in b.nodes) < sum(len(n.children) for n in a.nodes)
