"""Phase 1: prompted search, reply cleaning, sample construction, the resumable gen-sft job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rftt_plugin.phase1.job import GenSftJob, load_questions, question_key
from rftt_plugin.store.journal import Journal, JournalError
from rftt_plugin.store.run_dir import RunMismatch
from rftt_plugin.phase1.stitch import PathInfo, SampleConfig, build_sample, choose, merge_steps
from rftt_plugin.phase1.prompted_search import PHASE1_GRAMMAR, PromptedConfig, PromptedSearch
from rftt_plugin.phase1.prompt_templates import (
    ACTIONS, action_messages, clean_reply, request_kind, states_answer, verify_messages,
)
from rftt_plugin.search.tree import Tree
from rftt_plugin.tokens import ROOT, FunctionalTag, Step, parse, validate
from tests.helpers import REPO, clean_env
from tests.phase1_fakes import VERIFY_TEXT, Crash, ScriptedChat, make_question

T = FunctionalTag

# A narrow config whose tree is fully known: root -> next_step "multiply" -> {next_step "add"
# (correct), direct_answer (wrong)}.
NARROW = dict(samples={"next_step": 1, "direct_answer": 1}, root_direct_answer=False, iterations=4)


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


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


# --------------------------------------------------------------------------------------------
# Prompts and cleaning
# --------------------------------------------------------------------------------------------

def test_prompts_render_with_a_real_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    from rftt_plugin.phase1.chat import chat_ids

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    steps = [Step(T.ANALYZE, "Multiply first."), Step(T.SUBQUESTION, "What is 3 * 4?")]
    for action in ACTIONS:
        messages = action_messages(action, "What is 2 + 3 * 4?", steps)
        assert request_kind(messages) == action.value
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
        assert "What is 2 + 3 * 4?" in text and "1. [plan] Multiply first." in text
        assert "2. [sub-question] What is 3 * 4?" in text
        ids = chat_ids(tok, messages)
        assert tok.decode(ids) == text
        assert "\\box{" not in text  # B9: never ask for \box{}
    verify = verify_messages("Q?", steps[:1], [Step(T.DIRECT_ANSWER, "wrong")], [Step(T.NEXT_STEP, "right")])
    assert request_kind(verify) == "verify"
    assert "\\boxed" in action_messages(T.DIRECT_ANSWER, "Q", [])[0]["content"]


async def test_backend_chat_over_the_hf_backend(tiny_model_dir):
    from rftt_plugin.backends.hf import HFBackend
    from rftt_plugin.phase1.chat import BackendChat, ChatParams

    backend = HFBackend.from_pretrained(str(tiny_model_dir))
    try:
        chat = BackendChat(backend, backend.tokenizer, backend.eos_ids)
        reply = await chat.complete(action_messages(T.NEXT_STEP, "What is 2 + 3?", []),
                                    ChatParams(max_tokens=6, temperature=0.0, seed=1))
        assert reply.finish_reason in ("stop", "length") and reply.prompt_tokens > 20
        assert reply.completion_tokens <= 6
    finally:
        await backend.aclose()


async def test_phase1_search_through_an_openai_compatible_server(tiny_model_dir):
    """The --backend openai path: chat template applied locally, token ids over HTTP (vLLM dialect)."""
    from rftt_plugin.backends.hf import HFBackend
    from rftt_plugin.backends.openai import OpenAIBackend
    from rftt_plugin.backends.openai_server import CompletionServer
    from rftt_plugin.phase1.chat import BackendChat

    inner = HFBackend.from_pretrained(str(tiny_model_dir))
    server = CompletionServer(inner, "tiny", decode=inner._decode)
    await server.start()
    client = OpenAIBackend(server.base_url, "tiny", max_retries=0)
    try:
        chat = BackendChat(client, inner.tokenizer, inner.eos_ids)
        cfg = PromptedConfig(iterations=1, max_tokens={k: 4 for k in ("clarify", "analyze", "subquestion",
                                                                      "next_step", "direct_answer")})
        result = await PromptedSearch(chat, cfg).search("What is 2 + 3 * 4?", "14")
        assert result.tree.llm_calls == 9 and client.requests >= 9   # one expansion of the root, over HTTP
        dropped = sum(result.tree.meta["dropped"].values())
        assert dropped + len(result.tree.nodes) - 1 == 9 and "error" not in result.tree.meta["dropped"]
    finally:
        await client.aclose()
        await server.close()
        await inner.aclose()


@pytest.mark.parametrize("kind,raw,finish,expected", [
    # B10: an exact label is removed, the words after it are untouched ("numbers" keeps its ending)
    ("analyze", "Brief analysis: numbers first, then add.", "stop", "numbers first, then add."),
    ("analyze", "Brief analyses numbers", "stop", "Brief analyses numbers"),   # no exact label: unchanged
    ("analyze", "Analysis of the problem: use symmetry.", "stop", "Analysis of the problem: use symmetry."),
    ("clarify", "**Restated problem:** Find x.", "stop", "Find x."),
    ("clarify", "Restatement: \n\nFind x.", "stop", "Find x."),
    ("subquestion", "\n\nSub-question: What is 3 * 4?\nAnswer: 12", "stop", "What is 3 * 4?"),
    ("next_step", "Step 2 (step): 3 * 4 = 12.\nStep 3: add 2.", "stop", "3 * 4 = 12."),
    ("next_step", "3. [step] Add them: 14.", "stop", "Add them: 14."),
    ("next_step", "Next step: add.\nNext step: multiply.", "stop", "add."),
    ("next_step", "<think>\nlet me see\n</think>\n\n12 / 4 = 3.", "stop", "12 / 4 = 3."),
    ("next_step", "12 / 4 = 3.<|im_end|>\n<|im_start|>user", "stop", "12 / 4 = 3."),
    ("direct_answer", "```\nx = 2, so \\boxed{2}\n```", "stop", "x = 2, so \\boxed{2}"),
    ("direct_answer", "If a<b and b>c then 1 < 2.", "stop", "If a<b and b>c then 1 < 2."),  # math, not tags
    ("verify", "Check: step 2 adds before multiplying.", "stop", "step 2 adds before multiplying."),
])
def test_clean_reply_keeps_the_right_text(kind, raw, finish, expected):
    cleaned = clean_reply(kind, raw, finish)
    assert cleaned.ok and cleaned.text == expected


@pytest.mark.parametrize("kind,raw,finish,reason", [
    ("next_step", "", "stop", "empty"),
    ("next_step", "   \n\t ", "stop", "empty"),
    ("analyze", "Plan:", "stop", "empty"),
    ("next_step", "3 * 4 = 12 and then", "length", "truncated"),
    ("next_step", None, "error", "error"),
    ("next_step", "<think>I am still thinking", "stop", "unclosed_think"),
    ("direct_answer", "<next_step>\n3 * 4\n</next_step>", "stop", "tag_in_text"),
    ("direct_answer", "So <answer>5</answer>", "stop", "tag_in_text"),
    ("verify", "It should be \\boxed{14}.", "stop", "boxed_in_check"),
    ("next_step", "<|im_end|>", "stop", "empty"),
])
def test_clean_reply_rejects_garbage(kind, raw, finish, reason):
    assert clean_reply(kind, raw, finish).reason == reason


def test_states_answer():
    assert states_answer("So the answer is \\boxed{5}.")
    assert states_answer("Therefore the final answer is 5.")
    assert states_answer("\\fbox{7}")
    assert not states_answer("Compute \\boxed{ first")       # an unclosed box is no answer
    assert not states_answer("Next, answer the sub-question.")


def test_config_rejects_bad_knobs():
    with pytest.raises(ValueError, match="unknown actions"):
        PromptedConfig(samples={"verify": 1})
    with pytest.raises(ValueError, match="nothing to search"):
        PromptedConfig(samples={"clarify": 0, "analyze": 0, "subquestion": 0, "next_step": 0})
    with pytest.raises(ValueError, match="unknown PromptedConfig keys"):
        PromptedConfig.from_mapping({"iteration": 3})
    assert PromptedConfig().samples == {"clarify": 2, "analyze": 2, "subquestion": 2, "next_step": 2,
                                        "direct_answer": 1}
    partial = PromptedConfig(max_tokens={"next_step": 100}).max_tokens
    assert partial["next_step"] == 100 and partial["direct_answer"] == 4096   # a partial budget overrides only what it names
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        PromptedConfig(max_tokens={"next_step": 0})
    assert [a.value for a, _ in PromptedConfig(root_direct_answer=False).actions_after(ROOT)] == [
        "clarify", "analyze", "subquestion", "next_step"]


# --------------------------------------------------------------------------------------------
# Input rows
# --------------------------------------------------------------------------------------------

def test_bad_rows_are_reported_by_file_and_row(tmp_path):
    src = _write_jsonl(tmp_path / "q.jsonl", [
        {"problem": "What is 1 + 2 * 3?", "answer": "7"},
        {"answer": "3"},                                           # no question
        "{not json",
        {"problem": "What is 2 + 2 * 2?", "solution": "It is six."},  # no boxed answer, no answer field
        {"problem": "What is 1 + 2 * 3?", "answer": "7"},          # duplicate of row 1
        {"problem": "What is 3 + 1 * 1?", "solution": "so \\boxed{4}"},
    ])
    loaded = load_questions(str(src))
    assert [q.where for q in loaded.questions] == [f"{src}:1", f"{src}:6"]
    assert loaded.duplicates == 1 and loaded.read == 6
    bad = {b["where"]: b for b in loaded.bad_rows}
    assert set(bad) == {f"{src}:2", f"{src}:3", f"{src}:4"}
    assert bad[f"{src}:2"]["reason"] == "missing" and "problem" in bad[f"{src}:2"]["field"]
    assert "invalid JSON" in bad[f"{src}:3"]["reason"]
    assert bad[f"{src}:4"]["field"] == "solution"
    assert load_questions(str(src), limit=1).questions[0].gold == "7"


# --------------------------------------------------------------------------------------------
# The resumable job
# --------------------------------------------------------------------------------------------

def _questions(tmp_path: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        q, g = make_question(i + 1, i + 2, 3)
        rows.append({"problem": q, "answer": g})
    return _write_jsonl(tmp_path / "questions.jsonl", rows)


def _job(out, chat, grade=None, **search):
    cfg = PromptedConfig(**{"concurrency": 1, **NARROW, **search})
    return GenSftJob(out, chat, search=cfg, grade=grade, settings={"model": "scripted"}, progress=False)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_job_writes_parquet_and_report(tmp_path):
    import pyarrow.parquet as pq

    src = _questions(tmp_path, 4)
    chat = ScriptedChat(direct_answer_correct=lambda seed: False)
    report = await _job(tmp_path / "out", chat).run(load_questions(str(src)), source=str(src))
    assert report["samples"] == {"merged": 4, "merged_root": 0, "plain": 0, "total": 4}
    assert report["questions"]["done"] == 4 and not report["failed"] and not report["drops"]
    table = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    assert len(table) == 4
    row = table[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][0]["content"] == make_question(1, 2, 3)[0]
    assert validate(row["messages"][1]["content"]).ok
    assert row["source"] == f"{src}:1" and row["kind"] == "merged"
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["rows"] == 4 and "EMPTY" not in on_disk["summary"]


async def test_crash_then_resume_redoes_nothing_and_loses_nothing(tmp_path):
    src = _questions(tmp_path, 5)
    loaded = load_questions(str(src))
    out = tmp_path / "out"
    graded_golds: list[str] = []

    async def crashing_grade(text, gold):
        if gold not in graded_golds:
            graded_golds.append(gold)
        if len(graded_golds) == 3:  # the third question is being searched: "kill" the process
            raise Crash("simulated kill")
        from rftt_plugin.reward import grade_async

        return await grade_async(text, gold)

    with pytest.raises(Crash):
        await _job(out, ScriptedChat(direct_answer_correct=lambda seed: False), grade=crashing_grade).run(loaded)
    done = [r["key"] for r in _lines(out / "samples.jsonl")]
    assert done == [q.key for q in loaded.questions[:2]]
    assert [r["key"] for r in _lines(out / "trees.jsonl")] == done
    assert not (out / "train.parquet").exists()

    chat = ScriptedChat(direct_answer_correct=lambda seed: False)
    report = await _job(out, chat).run(loaded)
    for q in loaded.questions[:2]:
        assert chat.calls_for(q.question) == []          # finished questions are not redone
    for q in loaded.questions[2:]:
        assert chat.calls_for(q.question)                # the rest are searched
    samples = [r["key"] for r in _lines(out / "samples.jsonl")]
    assert sorted(samples) == sorted(q.key for q in loaded.questions) and len(samples) == 5  # none lost, none twice
    assert report["questions"]["done"] == 5 and report["rows"] == 5
    assert report["this_run"] == {"searched": 3, "reused_trees": 0, "built": 3}


async def test_crash_during_verification_reuses_the_stored_tree(tmp_path):
    src = _questions(tmp_path, 2)
    loaded = load_questions(str(src))
    second = loaded.questions[1].question
    boom = ScriptedChat(direct_answer_correct=lambda seed: False,
                        raise_on=lambda kind, q: Crash() if (kind, q) == ("verify", second) else None)
    with pytest.raises(Crash):
        await _job(tmp_path / "out", boom).run(loaded)
    assert len(_lines(tmp_path / "out" / "trees.jsonl")) == 2
    assert len(_lines(tmp_path / "out" / "samples.jsonl")) == 1
    chat = ScriptedChat(direct_answer_correct=lambda seed: False)
    report = await _job(tmp_path / "out", chat).run(loaded)
    assert chat.calls_for(second) == ["verify"]          # no search call: the tree came from disk
    assert report["this_run"] == {"searched": 0, "reused_trees": 1, "built": 1} and report["rows"] == 2


async def test_torn_last_line_is_repaired_and_redone(tmp_path):
    src = _questions(tmp_path, 3)
    loaded = load_questions(str(src))
    out = tmp_path / "out"
    await _job(out, ScriptedChat()).run(loaded)
    # simulate a crash in the middle of writing the last question's sample line
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    chat = ScriptedChat()
    report = await _job(out, chat).run(loaded)
    assert report["journal_repaired_bytes"]["samples.jsonl"] > 0
    assert report["this_run"] == {"searched": 0, "reused_trees": 1, "built": 1}
    assert len(_lines(out / "samples.jsonl")) == 3 and report["questions"]["done"] == 3


def test_journal_refuses_damage_in_the_middle_and_a_second_writer(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": "a"}\n{broken\n{"key": "c"}\n')
    with pytest.raises(JournalError, match=r"j\.jsonl:2"):
        Journal(path)
    path.write_text('{"key": "a"}\n')
    with Journal(path):
        with pytest.raises(JournalError, match="another process"):
            Journal(path)
    with Journal(path) as j:  # the lock is released on close
        assert j.records == [{"key": "a"}] and j.repaired_bytes == 0


async def test_rerun_with_other_settings_is_refused(tmp_path):
    src = _questions(tmp_path, 1)
    await _job(tmp_path / "out", ScriptedChat()).run(load_questions(str(src)))
    with pytest.raises(RunMismatch, match="search.iterations: the run has 4, this command has 5"):
        await _job(tmp_path / "out", ScriptedChat(), iterations=5).run(load_questions(str(src)))
    # concurrency is not a setting of the data: changing it resumes fine
    await _job(tmp_path / "out", ScriptedChat(), concurrency=3).run(load_questions(str(src)))


async def test_failed_question_is_reported_and_retried(tmp_path):
    src = _questions(tmp_path, 3)
    loaded = load_questions(str(src))
    flaky_question = loaded.questions[1].question

    class FlakyScorer:
        fail = True

        async def score_steps_async(self, question, steps):
            if self.fail and question == flaky_question:
                raise RuntimeError("PRM service down")
            return [0.5] * len(steps)

    scorer = FlakyScorer()
    job = _job(tmp_path / "out", ScriptedChat())
    job.scorer = scorer
    report = await job.run(loaded)
    assert [f["where"] for f in report["failed"]] == [loaded.questions[1].where]
    assert "PRM service down" in report["failed"][0]["error"] and "FAILED" in report["summary"]
    assert report["questions"]["pending"] == 1
    scorer.fail = False
    report = await job.run(loaded)
    assert not report["failed"] and report["questions"]["done"] == 3
    assert report["this_run"] == {"searched": 0, "reused_trees": 1, "built": 1}


async def test_empty_result_is_explicit(tmp_path):
    import pyarrow.parquet as pq

    src = _questions(tmp_path, 2)
    dead = ScriptedChat(overrides={k.value: "" for k in ACTIONS})
    report = await _job(tmp_path / "out", dead).run(load_questions(str(src)))
    assert report["rows"] == 0 and report["drops"] == {"empty_tree": 2}
    assert "EMPTY" in report["summary"]
    table = pq.read_table(tmp_path / "out" / "train.parquet")
    assert table.num_rows == 0 and "messages" in table.column_names


# --------------------------------------------------------------------------------------------
# The command, from a fresh process, with the tiny random model (done-when of issue 9)
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_gen_sft_command_with_the_tiny_hf_model(tiny_model_dir, tmp_path):
    src = _write_jsonl(tmp_path / "three.jsonl", [
        {"problem": "What is 2 + 3 * 4?", "solution": "First 3 * 4 = 12, then \\boxed{14}."},
        {"question": "Tom has 5 apples and buys 7 more. How many now?", "answer": "12"},
        {"problem": "Solve 2x + 4 = 10 for x.", "answer": "3"},
        {"problem": "A row without a gold answer."},
    ])
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).with_name("rftt")), "gen-sft", "--backend", "hf", "--model", str(tiny_model_dir),
           "--source", str(src), "--out", str(out), "--max-tokens", "8", "--iterations", "2", "--quiet"]
    proc = subprocess.run(["timeout", "120", *cmd], capture_output=True, text=True, env=clean_env(), cwd=REPO,
                          timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipping bad row {src}:4" in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["questions"] == {"read_rows": 4, "usable": 3, "bad_rows": 1, "duplicates": 0, "done": 3, "pending": 0}
    assert (out / "train.parquet").exists() and len(_lines(out / "trees.jsonl")) == 3
    # a random model never answers correctly: the output says so instead of pretending
    assert report["rows"] == sum(report["samples"][k] for k in ("merged", "merged_root", "plain"))
    if report["rows"] == 0:
        assert "EMPTY" in proc.stdout and "EMPTY" in report["summary"]


@pytest.mark.slow
async def test_gen_sft_command_with_the_openai_backend(tiny_model_dir, tmp_path):
    """`--backend openai` from a fresh process, against a local vLLM-dialect server (tiny model)."""
    import asyncio

    from rftt_plugin.backends.hf import HFBackend
    from rftt_plugin.backends.openai_server import CompletionServer

    src = _write_jsonl(tmp_path / "one.jsonl", [{"problem": "What is 2 + 3 * 4?", "answer": "14"}])
    inner = HFBackend.from_pretrained(str(tiny_model_dir))
    server = CompletionServer(inner, "tiny", decode=inner._decode)
    await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            "timeout", "120", str(Path(sys.executable).with_name("rftt")), "gen-sft", "--backend", "openai",
            "--base-url", server.base_url, "--model", "tiny", "--tokenizer", str(tiny_model_dir),
            "--source", str(src), "--out", str(tmp_path / "out"), "--max-tokens", "4", "--iterations", "1",
            "--quiet", env=clean_env(), cwd=str(REPO), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 150)
    finally:
        await server.close()
        await inner.aclose()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    trees = _lines(tmp_path / "out" / "trees.jsonl")
    assert len(trees) == 1 and trees[0]["tree"]["llm_calls"] == 9
    assert "error" not in trees[0]["tree"]["meta"]["dropped"]   # every call reached the server and came back
    assert json.loads((tmp_path / "out" / "report.json").read_text())["settings"]["backend"] == "openai"


def test_question_key_is_stable():
    assert question_key("Q", "1") != question_key("Q", "2")
    assert len(question_key("Q", "1")) == 16


@pytest.mark.parametrize("module_name", ["rftt_plugin.phase1.prompt_templates", "rftt_plugin.store.journal",
                                         "rftt_plugin.phase1.job"])
def test_doctests(module_name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
