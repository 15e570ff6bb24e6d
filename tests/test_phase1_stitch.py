"""Phase 1 samples: the merged (self-correcting) sample, plain samples, drops, choice rules (phase1/stitch.py)."""

from __future__ import annotations


import pytest

from rftt_plugin.phase1.stitch import PathInfo, SampleConfig, build_sample, choose, merge_steps
from rftt_plugin.phase1.prompted_search import PHASE1_GRAMMAR, PromptedConfig, PromptedSearch
from rftt_plugin.phase1.prompt_templates import ACTIONS
from rftt_plugin.search.tree import Tree
from rftt_plugin.tokens import FunctionalTag, Step, parse, validate
from tests.phase1_fakes import NARROW, VERIFY_TEXT, ScriptedChat, make_question

T = FunctionalTag


# --------------------------------------------------------------------------------------------
# The merged sample, exactly
# --------------------------------------------------------------------------------------------

async def test_merged_sample_is_exactly_the_expected_text():
    chat = ScriptedChat(direct_answer_correct=lambda seed: False)
    question, gold = make_question(2, 3, 4)
    result = await PromptedSearch(chat, PromptedConfig(**NARROW)).search(question, gold)
    outcome = await build_sample(result.tree, chat)
    expected = (
        "<next_step>\nMultiply first: 3 * 4 = 12.\n</next_step>\n"
        "<direct_answer>\nLeft to right, 2 + 3 = 5 and 5 * 4 = 20. The answer is \\boxed{20}.\n</direct_answer>\n"
        f"<verify>\n{VERIFY_TEXT}\n</verify>\n"
        "<refine>\nAdd: 2 + 12 = 14. The answer is \\boxed{14}.\n</refine>\n"
        "<output>\nThe answer is \\boxed{14}.\n</output>\n"
    )
    assert outcome.kind == "merged" and outcome.drop is None
    assert outcome.response == expected
    assert validate(outcome.response).ok
    assert outcome.details["shared_steps"] == 1 and outcome.details["wrong_answer"] == "20"
    # the cross-verification call saw the shared step, the wrong tail and the correct continuation
    verify_prompts = [k for k, _ in chat.calls if k == "verify"]
    assert verify_prompts == ["verify"]


async def test_only_correct_paths_give_a_plain_sample():
    chat = ScriptedChat(direct_answer_correct=lambda seed: True)
    question, gold = make_question(1, 2, 5)
    result = await PromptedSearch(chat, PromptedConfig(**NARROW)).search(question, gold)
    outcome = await build_sample(result.tree, chat)
    assert outcome.kind == "plain"
    steps = parse(outcome.response)
    assert [s.tag for s in steps][-1] is T.OUTPUT and steps[-1].text == "The answer is \\boxed{11}."
    assert validate(outcome.response).ok
    assert not any(k == "verify" for k, _ in chat.calls)


async def test_no_correct_path_is_dropped():
    chat = ScriptedChat(direct_answer_correct=lambda seed: False,
                        overrides={"next_step": "Multiply first: the product is large."})
    question, gold = make_question(2, 3, 4)
    result = await PromptedSearch(chat, PromptedConfig(**NARROW)).search(question, gold)
    outcome = await build_sample(result.tree, chat)
    assert outcome.kind is None and outcome.drop == "no_correct_path"


async def test_default_grammar_search_is_valid_and_merges():
    chat = ScriptedChat()
    question, gold = make_question(2, 3, 4)
    result = await PromptedSearch(chat, PromptedConfig(seed=3)).search(question, gold)
    tree = result.tree
    assert len(tree.iterations) == 16
    for node in tree.nodes[1:]:  # every edge follows the phase-1 grammar, clarify only at depth 1
        parent = tree[node.parent]
        assert node.tag in PHASE1_GRAMMAR[parent.tag]
        assert node.tag is not T.CLARIFY or node.depth == 1
        if node.tag is T.DIRECT_ANSWER:
            assert node.terminal_reason == "answer" and not node.children
    assert tree.root.N == 16
    outcome = await build_sample(tree, chat)
    assert outcome.kind in ("merged", "merged_root") and validate(outcome.response).ok
    # JSON round trip keeps everything sample construction needs
    again = Tree.from_json(tree.to_json())
    assert (await build_sample(again, chat)).response == outcome.response


async def test_search_is_deterministic_for_a_seed():
    question, gold = make_question(4, 5, 6)
    a = await PromptedSearch(ScriptedChat(), PromptedConfig(seed=1)).search(question, gold)
    b = await PromptedSearch(ScriptedChat(), PromptedConfig(seed=1)).search(question, gold)
    assert [(n.tag, n.text, n.Q, n.N) for n in a.tree.nodes] == [(n.tag, n.text, n.Q, n.N) for n in b.tree.nodes]


async def test_depth_cap_and_dead_ends():
    # next steps never state an answer and direct answers are off: paths end at the depth cap
    chat = ScriptedChat(overrides={"next_step": "Keep going."})
    cfg = PromptedConfig(samples={"next_step": 1}, max_depth=3, iterations=2)
    tree = (await PromptedSearch(chat, cfg).search(*make_question(1, 1, 1))).tree
    assert [n.terminal_reason for n in tree.nodes[1:]] == [None, None, "depth"]
    # every reply unusable: the root is a dead end and the search stops with a reason
    dead = ScriptedChat(overrides={k.value: "" for k in ACTIONS})
    tree = (await PromptedSearch(dead, PromptedConfig(iterations=3)).search(*make_question(1, 1, 1))).tree
    assert len(tree.nodes) == 1 and "no usable reply" in tree.meta["error"]
    assert tree.meta["dropped"]["empty"] == 9
    assert (await build_sample(tree, dead)).drop == "empty_tree"


async def test_unusable_verification_falls_back_to_plain():
    chat = ScriptedChat(direct_answer_correct=lambda seed: False, overrides={"verify": "The answer is \\boxed{14}."})
    result = await PromptedSearch(chat, PromptedConfig(**NARROW)).search(*make_question(2, 3, 4))
    outcome = await build_sample(result.tree, chat, cfg=SampleConfig(verify_attempts=2))
    assert outcome.kind == "plain" and outcome.details["fallback"] == "verify_unusable"
    assert outcome.details["verify_attempts"] == ["boxed_in_check", "boxed_in_check"]


async def test_too_long_samples_are_dropped(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = ScriptedChat(direct_answer_correct=lambda seed: False)
    tree = (await PromptedSearch(chat, PromptedConfig(**NARROW)).search(*make_question(2, 3, 4))).tree
    fits = await build_sample(tree, chat, tokenizer=tok, cfg=SampleConfig(max_length=100_000))
    assert fits.kind == "merged" and fits.details["tokens"] > 20
    short = await build_sample(tree, chat, tokenizer=tok, cfg=SampleConfig(max_length=20))
    assert short.drop == "too_long"


async def test_a_sample_that_fails_validation_is_dropped_not_written():
    # A hand-made tree: 16 shared next steps, then a correct answer and a wrong direct answer.
    # The merged response would have 16 + 1 + verify + refine + output = 20 steps > the cap of 18.
    tree = Tree("What is 2 + 3 * 4?", [], -1, "14", {"kind": "prompted"})
    node = tree.root
    for i in range(16):
        node = tree.add_child(node, T.NEXT_STEP, text=f"Step {i}: keep going.", generated=True)
        node.expanded = True
    right = tree.add_child(node, T.NEXT_STEP, text="So the answer is \\boxed{14}.", terminal_reason="answer", reward=1.0)
    tree.add_child(node, T.DIRECT_ANSWER, text="The answer is \\boxed{20}.", terminal_reason="answer", reward=0.0)
    tree.backup(right, 1.0)
    outcome = await build_sample(tree, ScriptedChat())
    assert outcome.kind is None and outcome.drop == "invalid:too_deep"
    assert "exceeds the depth cap" in outcome.details["problem"]


# --------------------------------------------------------------------------------------------
# Choice rules
# --------------------------------------------------------------------------------------------

def _path(leaf, ids, tags, correct, value, prm=None, answer="1"):
    steps = [Step(t, f"s{i}") for i, t in zip(ids, tags)]
    return PathInfo(leaf, list(ids), steps, answer, correct, value, prm)


def test_choice_prefers_shared_prefix_then_worst_score():
    N, D = T.NEXT_STEP, T.DIRECT_ANSWER
    best = _path(3, [1, 2, 3], [N, N, N], True, 0.9)
    other_correct = _path(9, [8, 9], [N, N], True, 0.5)
    root_fork = _path(5, [4, 5], [N, D], False, 0.0)           # shares only the question, lowest score
    shared_bad = _path(6, [1, 6], [N, D], False, 0.4)           # shares step 1
    shared_worse = _path(7, [1, 2, 7], [N, N, D], False, 0.3)   # shares steps 1-2, worst of the sharing ones
    choice = choose([best, other_correct, root_fork, shared_bad, shared_worse])
    assert choice.best is best and choice.wrong is shared_worse and choice.shared == 2
    # only a root fork available: used when allowed, plain otherwise
    choice = choose([best, root_fork])
    assert choice.wrong is root_fork and choice.shared == 0
    assert choose([best, root_fork], allow_root_fork=False).wrong is None
    # a path that starts with direct_answer (the root's direct answer) cannot start a response
    assert choose([_path(4, [4], [D], True, 1.0)]) is None
    # a wrong path without an extractable answer is not a wrong *answer*
    assert choose([best, _path(6, [1, 6], [N, D], False, 0.0, answer=None)]).wrong is None


def test_choice_by_prm_mean():
    N, D = T.NEXT_STEP, T.DIRECT_ANSWER
    a = _path(2, [1, 2], [N, N], True, 1.0, prm=[0.2, 0.4])
    b = _path(4, [3, 4], [N, N], True, 0.5, prm=[0.9, 0.9])
    w1 = _path(5, [3, 5], [N, D], False, 0.0, prm=[0.9, 0.6])
    w2 = _path(6, [3, 6], [N, D], False, 1.0, prm=[0.9, 0.1])
    choice = choose([a, b, w1, w2], use_prm=True)
    assert choice.best is b and choice.wrong is w2       # highest / lowest mean PRM score
    assert choose([a, b, w1, w2], use_prm=False).best is a  # by search value


async def test_prm_scorer_is_used_for_selection():
    class Scorer:
        calls = 0

        async def score_steps_async(self, question, steps):
            Scorer.calls += 1
            return [0.5] * len(steps)

    chat = ScriptedChat(direct_answer_correct=lambda seed: False)
    tree = (await PromptedSearch(chat, PromptedConfig(**NARROW)).search(*make_question(2, 3, 4))).tree
    outcome = await build_sample(tree, chat, scorer=Scorer())
    assert Scorer.calls == 2 and outcome.details["prm"] and outcome.details["best_score"] == 0.5


def test_merge_refuses_paths_that_do_not_share_the_prefix():
    N, D = T.NEXT_STEP, T.DIRECT_ANSWER
    with pytest.raises(ValueError, match="do not share"):
        merge_steps(_path(2, [1, 2], [N, N], True, 1), _path(4, [3, 4], [N, D], False, 0), 1, "check")
