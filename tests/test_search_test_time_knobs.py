"""Search knobs for test-time search and ablations (issue 24): ``samples_per_tag`` and
``blocked_tags``, on the scripted fake backend; expectations are counted from the tree by hand."""

from __future__ import annotations

from collections import Counter

import pytest

from rftt_plugin.config.schema import ConfigError, settings_from_mapping
from rftt_plugin.search import SearchConfig
from rftt_plugin.tokens import FunctionalTag as T, allowed_next
from tests.test_search_mcts import P, Q, engine


async def test_samples_per_tag_gives_each_kept_tag_that_many_sampled_children():
    mcts, _, _ = engine(samples_per_tag=3, step_temperature=1.0, min_tag_prior=0.1, iterations=16)
    tree = (await mcts.search(Q, P)).tree
    expanded = [n for n in tree.nodes if n.expanded]
    assert expanded
    for node in expanded:
        tags = Counter(tree[c].tag for c in node.children)
        assert set(tags.values()) == {3}, (node.id, tags)          # every kept tag three times
        kids = tree.children(node)
        # siblings of one tag share its rank and prior but are separate nodes (own step seed)
        for tag in tags:
            same = [k for k in kids if k.tag is tag]
            assert len({k.id for k in same}) == 3 and len({(k.rank, k.prior) for k in same}) == 1
    generated = [n for n in tree.nodes[1:] if n.generated]
    first_steps = [tuple(n.token_ids) for n in generated if n.parent == 0 and n.tag is tree[tree.root.children[0]].tag]
    assert len(first_steps) >= 2 and len(set(first_steps)) >= 2   # temperature 1: the samples differ


async def test_samples_per_tag_one_is_the_faithful_tree():
    a = (await engine(iterations=8)[0].search(Q, P)).tree.to_dict()
    b = (await engine(iterations=8, samples_per_tag=1)[0].search(Q, P)).tree.to_dict()
    a["meta"].pop("wall_s"), b["meta"].pop("wall_s")
    assert a == b


async def test_blocked_tags_are_never_expanded():
    mcts, _, _ = engine(blocked_tags=("verify", "refine"), iterations=16)
    tree = (await mcts.search(Q, P)).tree
    tags = {n.tag for n in tree.nodes[1:]}
    assert T.VERIFY not in tags and T.REFINE not in tags
    # every other tag the grammar allows is still a child (faithful otherwise)
    for node in (n for n in tree.nodes if n.expanded):
        allowed = [t for t in allowed_next(node.tag, node.depth, mcts.config.max_depth) if t not in (T.VERIFY, T.REFINE)]
        assert sorted(tree[c].tag.value for c in node.children) == sorted(t.value for t in allowed)
    full = (await engine(iterations=16)[0].search(Q, P)).tree
    assert any(n.tag in (T.VERIFY, T.REFINE) for n in full.nodes[1:])   # the fake does use them unblocked


def test_knob_values_are_checked():
    with pytest.raises(ValueError, match="blocked_tags.*unknown tags \\['verfy'\\]"):
        SearchConfig(blocked_tags=("verfy",))
    with pytest.raises(ValueError, match="output cannot be blocked"):
        SearchConfig(blocked_tags=("output",))
    with pytest.raises(ValueError, match="samples_per_tag=0"):
        SearchConfig(samples_per_tag=0)
    # JSON keeps a list: a stored fingerprint compares equal to a rebuilt one
    assert SearchConfig(blocked_tags=["verify"]).to_dict()["blocked_tags"] == ["verify"]


def test_the_recipe_schema_takes_blocked_tags_as_a_list():
    settings = settings_from_mapping({"search": {"blocked_tags": ["verify", "refine"]}})
    assert settings.search.blocked_tags == ("verify", "refine")
    with pytest.raises(ConfigError, match="rftt.search.blocked_tags.*must be a list of str"):
        settings_from_mapping({"search": {"blocked_tags": "verify"}})


def test_rftt_search_takes_both_knobs_from_the_command_line(tmp_path, capsys):
    import json

    from rftt_plugin.cli import main

    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "What is 3 + 4 ?", "answer": "7"}) + "\n")
    argv = ["search", "--backend", "fake", "--questions", str(questions), "--iterations", "6", "--quiet",
            "--samples-per-tag", "2", "--blocked-tags", "verify, refine", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    tree = json.loads((tmp_path / "run" / "trees" / "00000.json").read_text())
    assert tree["meta"]["config"]["blocked_tags"] == ["verify", "refine"]
    assert tree["meta"]["config"]["samples_per_tag"] == 2
    assert not {n["tag"] for n in tree["nodes"][1:]} & {"verify", "refine"}
    assert main(argv) == 0   # a rerun resumes: the list compares equal to the stored one
    assert main(argv[:-2] + ["--blocked-tags", "verfy", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown tags ['verfy']" in capsys.readouterr().err
