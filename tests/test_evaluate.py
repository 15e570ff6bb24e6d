"""`rftt eval`: answer selection and budgets (hand-made leaves), aggregation, the resumable run
directory, tree-mode wiring on the scripted fake policy, and end to end on the tiny model in
both modes (resume after a stop and after a torn last line, config mismatch, plot)."""

from __future__ import annotations

import json
import os

import pytest

from rftt_plugin.backends.fake import FakeVocab
from rftt_plugin.cli import main
from rftt_plugin.evaluation.aggregate import columns_for, score_record, summarize
from rftt_plugin.evaluation.selection import (
    LeafOutcome,
    assign_answer_classes,
    node_stats,
    parse_budgets,
    score_budget,
    select_answer,
)
from rftt_plugin.evaluation.records import EvalRunDir as RunStore
from rftt_plugin.store.run_dir import RunLocked, RunMismatch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def L(pred, cls, nodes, reward=1.0, acc=False, valid=True, tokens=10):  # noqa: N802 - a hand-made leaf
    return LeafOutcome(pred=pred, acc=acc, valid=valid, format_ok=valid, reward=reward, node_ids=tuple(nodes),
                       new_tokens=tokens, answer_class=cls, terminal_reason="output" if valid else "depth")


# ----------------------------------------------------------------------------------------------
# selection (pure)
# ----------------------------------------------------------------------------------------------

def test_majority_vote_counts_valid_leaves_only():
    leaves = [L("1", 0, [1]), L("2", 1, [2]), L("2", 1, [3]),
              L(None, None, [4], valid=False), L(None, None, [5], valid=False), L(None, None, [6], valid=False)]
    sel = select_answer(leaves)
    assert (sel.pred, sel.votes, sel.leaf_index, sel.candidates) == ("2", 2, 1, 2)
    assert select_answer([L(None, None, [1], valid=False)]).leaf_index is None


def test_majority_tie_goes_to_summed_leaf_value_then_first_seen():
    # One vote each; "B" comes first but its path is worth less.
    leaves = [L("B", 0, [3, 4], reward=0.0), L("A", 1, [1, 2], reward=1.0)]
    assert select_answer(leaves, "majority").pred == "A"
    # Equal votes and values: the class seen first wins.
    assert select_answer([L("B", 0, [3]), L("A", 1, [1])], "majority").pred == "B"


def test_value_rule_can_overrule_the_majority():
    leaves = [L("A", 0, [1], reward=1.0), L("B", 1, [2], reward=0.0), L("B", 1, [2], reward=0.0)]
    assert select_answer(leaves, "majority").pred == "B"
    sel = select_answer(leaves, "value")
    assert (sel.pred, sel.value) == ("A", 1.0)
    with pytest.raises(ValueError, match="unknown selection rule 'best'"):
        select_answer(leaves, "best")


def test_budget_k_sees_only_the_first_k_backups():
    a1 = L("A", 0, [1, 2], reward=1.0, acc=True)
    b = L("B", 1, [1, 3], reward=0.0)
    c = L("C", 2, [5], reward=1.0)
    d = L("D", 3, [5, 6], reward=0.0)   # a later back-up that lowers C's node
    leaves = [a1, b, c, d]
    # k=3, values after 3 back-ups: A = mean(1/2, 1/1) = 0.75, C = 1.0 -> C.
    assert score_budget(leaves, 3, "value").pred == "C"
    # With the final statistics A (0.833) would beat C (0.5); k=3 must not see iteration 4.
    assert select_answer(leaves, "value").pred == "A"
    out = score_budget(leaves, 2, "value")
    assert (out.pred, out.acc, out.pass_any, out.valid_leaves, out.tokens) == ("A", True, True, 2, 20)
    out = score_budget(leaves, 3, "value")
    assert (out.acc, out.pass_any) == (False, True)   # some leaf was right, the selection was not
    assert score_budget(leaves, 10).valid_leaves == 4  # a short search is scored on what it has
    with pytest.raises(ValueError):
        score_budget(leaves, 0)


def test_pass_any_ignores_leaves_that_cannot_vote():
    leaves = [L(None, None, [1], valid=False, acc=True), L("9", 0, [2])]
    out = score_budget(leaves, 2)
    assert (out.pred, out.acc, out.pass_any, out.answered) == ("9", False, False, True)


@pytest.mark.parametrize("module_name", ["rftt_plugin.evaluation.selection", "rftt_plugin.store.run_dir"])
def test_doctests(module_name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name))
    assert result.failed == 0 and result.attempted > 0


def test_node_stats_and_answer_classes():
    stats = node_stats([L("A", 0, [1, 2], reward=1.0), L("B", 1, [1, 3], reward=0.5)])
    assert stats == {1: (1.5, 2), 2: (1.0, 1), 3: (0.5, 1)}
    calls = []

    def same(a, b):
        calls.append((a, b))
        return {a, b} == {"0.5", "\\frac{1}{2}"}

    classes = assign_answer_classes(["\\frac{1}{2}", None, "0.5", "\\dfrac{1}{2}", " 3", "3."], same)
    assert classes == [0, None, 0, 0, 1, 1]
    assert ("\\dfrac{1}{2}", "\\frac{1}{2}") not in calls  # same canonical form: no symbolic check
    assert parse_budgets("16,1, 4") == [1, 4, 16]
    for bad in ("0", "x", ""):
        with pytest.raises(ValueError):
            parse_budgets(bad)


# ----------------------------------------------------------------------------------------------
# aggregation and report (pure + files)
# ----------------------------------------------------------------------------------------------

def _chain_record(i, bench, acc, level=None, subject=None, tokens=10):
    meta = {k: v for k, v in (("level", level), ("subject", subject)) if v is not None}
    return {"id": f"{bench}-{i}", "benchmark": bench, "mode": "chain", "acc": acc, "has_answer": True,
            "format_ok": acc, "tokens": tokens, "seconds": 1.0, "meta": meta}


def _summary():
    cols = columns_for("chain", [1])
    recs = [_chain_record(0, "math500", True, 1, "Algebra"), _chain_record(1, "math500", False, 1, "Geometry"),
            _chain_record(2, "math500", True, 10, "Algebra"), _chain_record(3, "math500", True, 2, "Algebra"),
            _chain_record(0, "amc23", False)]
    scores = [score_record(r, cols) for r in recs]
    return summarize(scores, cols, {"math500": 4, "amc23": 2})


def test_summarize_breakdowns_and_averages():
    s = _summary()
    m, a = s["benchmarks"]["math500"], s["benchmarks"]["amc23"]
    assert m["accuracy"]["pass@1"] == 0.75 and m["complete"]
    assert (a["n"], a["expected"], a["complete"], a["accuracy"]["pass@1"]) == (1, 2, False, 0.0)
    assert list(m["by_level"]) == ["1", "2", "10"]          # numeric order
    assert m["by_level"]["1"] == {"n": 2, "accuracy": {"pass@1": 0.5}}
    assert m["by_subject"]["Algebra"]["accuracy"]["pass@1"] == 1.0
    assert "by_level" not in a
    assert s["overall"]["micro"]["accuracy"]["pass@1"] == 0.6
    assert s["overall"]["macro_accuracy"]["pass@1"] == pytest.approx(0.375)


def test_tree_records_are_rescored_from_their_leaves():
    rec = {"id": "amc23-0", "benchmark": "amc23", "mode": "tree", "seconds": 2.0, "meta": {},
           "leaves": [L("5", 0, [1], acc=True).to_dict(), L("6", 1, [2]).to_dict(), L("6", 1, [3]).to_dict()]}
    cols = columns_for("tree", [1, 3])
    cells = score_record(rec, cols, "majority").cells
    assert (cells["k=1"].acc, cells["k=3"].acc, cells["k=3"].pass_any, cells["k=3"].tokens) == (True, False, True, 30)


def test_report_files(tmp_path):
    from matplotlib import image as mpimg

    from rftt_plugin.evaluation.report import markdown, write_plot

    payload = {"mode": "tree", "model": "m", "selection": "majority", "summary": _summary(), "wall_s": 1.0,
               "failed": ["amc23-1: boom"]}
    text = markdown(payload)
    assert "| MATH-500 | 4/4 | 75.0 |" in text and "1/2 (incomplete)" in text
    assert "## MATH-500 by level" in text and "| 10 | 1 | 100.0 |" in text
    assert "amc23-1: boom" in text
    path = tmp_path / "plot.png"
    assert write_plot(path, payload)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert mpimg.imread(path).shape[2] in (3, 4)


# ----------------------------------------------------------------------------------------------
# the run directory
# ----------------------------------------------------------------------------------------------

def test_store_cuts_a_torn_last_line_and_skips_bad_middle_lines(tmp_path):
    warnings = []
    with RunStore(tmp_path, {"mode": "chain"}, warn=warnings.append) as st:
        st.append({"id": "a", "v": 1})
        st.append({"id": "b", "v": 2})
    path = tmp_path / "records.jsonl"
    good = path.read_bytes()
    path.write_bytes(good + b'{"id": "c", "v"')            # died mid-write
    with RunStore(tmp_path, {"mode": "chain"}, warn=warnings.append) as st:
        assert set(st.loaded.records) == {"a", "b"} and st.loaded.cut_tail
        st.append({"id": "c", "v": 3})
    assert path.read_bytes() == good + b'{"id": "c", "v": 3}\n'
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], b"garbage", *lines[1:]]))
    with RunStore(tmp_path, {"mode": "chain"}, warn=warnings.append) as st:
        assert set(st.loaded.records) == {"a", "b", "c"} and st.loaded.skipped
    assert any("incomplete last line" in w for w in warnings) and any("unreadable line" in w for w in warnings)
    # a last line that parses but lost its newline gets one, so the next append is a new line
    path.write_bytes(b'{"id": "a"}')
    with RunStore(tmp_path, {"mode": "chain"}) as st:
        st.append({"id": "z"})
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "z"]


def test_store_refuses_other_settings_and_live_writers(tmp_path):
    with RunStore(tmp_path, {"mode": "chain", "max_tokens": 8}) as st:
        st.append({"id": "a"})
        (st.trees_dir).mkdir()
    with pytest.raises(RunMismatch, match="max_tokens: the run has 8, this command has 9"):
        RunStore(tmp_path, {"mode": "chain", "max_tokens": 9}).open()
    assert not (tmp_path / ".lock").exists()   # a refused open releases the lock
    with RunStore(tmp_path, {"mode": "chain", "max_tokens": 9}, overwrite=True) as st:
        assert st.loaded.records == {} and not st.trees_dir.exists()
    (tmp_path / ".lock").write_text(str(os.getppid()))  # a live process that is not us
    with pytest.raises(RunLocked, match="another rftt eval"):
        RunStore(tmp_path, {"mode": "chain", "max_tokens": 9}).open()
    (tmp_path / ".lock").write_text("999999999")        # stale: taken over
    with RunStore(tmp_path, {"mode": "chain", "max_tokens": 9}):
        pass
    other = tmp_path / "other"
    other.mkdir()
    (other / "records.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(RunMismatch, match="no run.json"):
        RunStore(other, {"mode": "chain"}).open()
    # a run without any finished question may change its settings
    empty = tmp_path / "empty"
    with RunStore(empty, {"mode": "chain", "max_tokens": 1}):
        pass
    with RunStore(empty, {"mode": "chain", "max_tokens": 2}):
        pass
    assert json.loads((empty / "run.json").read_text())["fingerprint"]["max_tokens"] == 2


# ----------------------------------------------------------------------------------------------
# tree mode on the scripted fake policy (answers that can be right or wrong)
# ----------------------------------------------------------------------------------------------

@pytest.fixture()
def sevens(tmp_path):
    """A GSM8K-format file whose every gold is 7 (the fake policy boxes 7 or 8)."""
    path = tmp_path / "sevens.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} plus {7 - i} ?", "answer": f"#### 7", "idx": i}) + "\n"
                            for i in range(5)))
    return str(path)


VOCAB = FakeVocab()  # the fake backend's vocabulary stands in for the tokenizer that builds the prompts


def _fake(p_correct=0.5):
    from rftt_plugin.backends.fake import FakeBackend, TagScript
    from rftt_plugin.tag_ids import TagIds

    script = TagScript(answer="7", wrong_answer="8", p_correct=p_correct)
    return FakeBackend.for_script(script), TagIds.from_fake(script.vocab)


async def test_first_k_leaves_are_a_k_iteration_search():
    from rftt_plugin.search import FunctionalMCTS, SearchConfig

    backend, layout = _fake()
    prompt = VOCAB.prompt_ids("q 1")
    long = await FunctionalMCTS(backend, layout, SearchConfig(iterations=8), grade=lambda t: 1.0).search("q 1", prompt)
    short = await FunctionalMCTS(backend, layout, SearchConfig(iterations=3), grade=lambda t: 1.0).search("q 1", prompt)
    assert [(lf.node_ids, lf.response_ids, lf.reward) for lf in short.leaves] == \
           [(lf.node_ids, lf.response_ids, lf.reward) for lf in long.leaves[:3]]
    # node_stats over all leaves reproduces the tree's own Q and N
    outcomes = [LeafOutcome("x", False, True, True, lf.reward, tuple(lf.node_ids)) for lf in long.leaves]
    stats = node_stats(outcomes)
    assert stats == {n.id: (pytest.approx(n.Q), n.N) for n in long.tree.nodes[1:] if n.N}


def test_tree_eval_on_fake_policy_and_reselection(tmp_path, sevens):
    from collections import Counter

    from rftt_plugin.evaluation.job import EvalConfig, evaluate
    from rftt_plugin.search import Tree

    backend, layout = _fake()
    out = tmp_path / "fake"
    cfg = EvalConfig(model="fake-policy", out=str(out), mode="tree", rollouts=[1, 2, 4, 8], benchmarks=["gsm8k"],
                     sources={"gsm8k": sevens}, progress=False, step_max_tokens=64, concurrency=3,
                     selection="majority")
    res = evaluate(cfg, backend=backend, tokenizer=VOCAB, layout=layout)
    assert (res.ran, res.failed) == (5, [])
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    acc = {}
    for k in (1, 2, 4, 8):   # independent recomputation: plain vote count, ties to the most probable
        right = 0            # tag path, then first seen (the summed value, next in the rule, never decides here)
        for r in records:
            voting = [lf for lf in r["leaves"][:k] if lf["valid"]]
            preds = [lf["pred"] for lf in voting]
            count = Counter(preds)
            top = max(count.values())
            best_path = {}
            for lf in voting:
                best_path[lf["pred"]] = max(best_path.get(lf["pred"], -1e18), round(lf["path_logprob"], 9))
            tied = [p for p in preds if count[p] == top]
            winner = next(p for p in tied if best_path[p] == max(best_path[q] for q in tied))
            right += winner == "7"
            assert r["budgets"][str(k)]["pred"] == winner
        acc[f"k={k}"] = right / len(records)
    summary = res.summary["benchmarks"]["gsm8k"]
    assert summary["accuracy"] == acc
    assert 0 < summary["pass_any"]["k=8"] <= 1 and summary["pass_any"]["k=1"] == acc["k=1"]
    assert summary["tokens_per_question"]["k=1"] < summary["tokens_per_question"]["k=8"]
    tree = Tree.load(out / records[0]["tree_file"])
    assert tree.question == records[0]["question"] and len(tree.iterations) == 8
    assert tree.meta["search_reward"] == "answered"

    class NoCalls:
        def __getattr__(self, name):
            raise AssertionError("a finished run must not call the model again")

    # Another selection rule and a subset of budgets: recomputed from records, nothing generated.
    cfg2 = EvalConfig(model="fake-policy", out=str(out), mode="tree", rollouts=[2, 8], benchmarks=["gsm8k"],
                      sources={"gsm8k": sevens}, progress=False, step_max_tokens=64, selection="value")
    res2 = evaluate(cfg2, backend=NoCalls(), tokenizer=VOCAB, layout=layout)
    assert res2.ran == 0 and res2.resumed == 5
    saved = json.loads((out / "results.json").read_text())
    assert saved["selection"] == "value" and [c["label"] for c in saved["summary"]["columns"]] == ["k=2", "k=8"]
    # The default rule, policy: each distinct answering leaf weighs exp(path_logprob), plain loops here.
    import math

    res3 = evaluate(EvalConfig(model="fake-policy", out=str(out), mode="tree", rollouts=[8], benchmarks=["gsm8k"],
                               sources={"gsm8k": sevens}, progress=False, step_max_tokens=64),
                    backend=NoCalls(), tokenizer=VOCAB, layout=layout)
    right = 0
    for r in records:
        weight, seen_paths = {}, set()
        for lf in r["leaves"][:8]:
            if lf["valid"] and tuple(lf["node_ids"]) not in seen_paths:
                seen_paths.add(tuple(lf["node_ids"]))
                weight[lf["pred"]] = weight.get(lf["pred"], 0.0) + math.exp(lf["path_logprob"])
        right += max(weight, key=weight.get) == "7"   # no exact weight ties on this fake
    assert res3.summary["benchmarks"]["gsm8k"]["accuracy"]["k=8"] == right / len(records)
    # A larger search is another configuration.
    cfg3 = EvalConfig(model="fake-policy", out=str(out), mode="tree", rollouts=[16], benchmarks=["gsm8k"],
                      sources={"gsm8k": sevens}, progress=False, step_max_tokens=64)
    with pytest.raises(RunMismatch, match="search.iterations: the run has 8, this command has 16"):
        evaluate(cfg3, backend=NoCalls(), tokenizer=VOCAB, layout=layout)


def test_tree_eval_through_an_openai_compatible_server(tmp_path, sevens):
    """--backend openai (the vLLM path) gives the same leaves as calling the policy directly."""
    import asyncio
    import threading

    from rftt_plugin.backends.openai_server import CompletionServer
    from rftt_plugin.evaluation.job import EvalConfig, evaluate

    direct_backend, layout = _fake()
    cfg_direct = EvalConfig(model="fake-policy", out=str(tmp_path / "direct"), mode="tree", rollouts=[1, 4],
                            benchmarks=["gsm8k"], sources={"gsm8k": sevens}, limit=3, progress=False,
                            step_max_tokens=64)
    evaluate(cfg_direct, backend=direct_backend, tokenizer=VOCAB, layout=layout)
    served_backend, _ = _fake()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = CompletionServer(served_backend, "fake-policy", decode=layout.decode)
    try:
        url = asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        cfg_http = EvalConfig(model="fake-policy", out=str(tmp_path / "http"), mode="tree", rollouts=[1, 4],
                              benchmarks=["gsm8k"], sources={"gsm8k": sevens}, limit=3, progress=False,
                              step_max_tokens=64, backend="openai", base_url=url, concurrency=2)
        res = evaluate(cfg_http, tokenizer=VOCAB, layout=layout)   # the backend is built from the settings
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert res.ran == 3 and not res.failed and server.requests

    def leaves(out):
        recs = [json.loads(x) for x in (tmp_path / out / "records.jsonl").read_text().splitlines()]
        return {r["id"]: r["leaves"] for r in recs}

    direct = leaves("direct")
    assert leaves("http") == direct and len(direct) == 3
    assert all(len(v) == 4 for v in direct.values()) and any(lf["valid"] for v in direct.values() for lf in v)
    assert "openai" in json.loads((tmp_path / "http" / "results.json").read_text())["backend"]


# ----------------------------------------------------------------------------------------------
# end to end on the tiny model, through the CLI
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def prepared_tiny(tiny_model_dir, tmp_path_factory):
    from rftt_plugin.prepare import prepare_model

    out = tmp_path_factory.mktemp("tiny_prepared") / "model"
    prepare_model(tiny_model_dir, out, progress=False)
    return str(out)


def _lines(path):
    return path.read_bytes().splitlines(keepends=True)


def _png_ok(path):
    from matplotlib import image as mpimg

    assert path.read_bytes()[:8] == PNG_MAGIC
    assert mpimg.imread(path).ndim == 3


def test_chain_end_to_end_resume_and_mismatch(tiny_model_dir, bench_data_dir, tmp_path, capsys):
    out = tmp_path / "chain"
    base = ["eval", "--model", str(tiny_model_dir), "--benchmarks", "math500,amc23", "--mode", "chain",
            "--max-tokens", "6", "--data-dir", bench_data_dir, "--out", str(out), "--quiet", "--concurrency", "2"]
    assert main(base + ["--limit", "1"]) == 0
    first = _lines(out / "records.jsonl")
    assert sorted(json.loads(x)["id"] for x in first) == ["amc23-0", "math500-0"]
    # "restart" with a larger limit: the finished questions are kept byte for byte, not redone
    assert main(base + ["--limit", "2"]) == 0
    assert "2 answered now, 2 resumed" in capsys.readouterr().out
    second = _lines(out / "records.jsonl")
    assert second[:2] == first and len(second) == 4
    # a torn last line (killed mid-write): cut, that one question runs again, nothing else
    (out / "records.jsonl").write_bytes(b"".join(second[:3]) + second[3][: len(second[3]) // 2])
    assert main(base + ["--limit", "2"]) == 0
    captured = capsys.readouterr()
    assert "1 answered now, 3 resumed" in captured.out and "incomplete last line" in captured.err
    third = _lines(out / "records.jsonl")
    assert third[:3] == second[:3] and len(third) == 4
    assert {json.loads(x)["id"] for x in third} == {"math500-0", "math500-1", "amc23-0", "amc23-1"}
    rec = json.loads(third[0])
    assert rec["mode"] == "chain" and rec["tokens"] <= 6 and isinstance(rec["response"], str)
    results = json.loads((out / "results.json").read_text())
    m = results["summary"]["benchmarks"]["math500"]
    assert (m["n"], m["expected"], m["complete"]) == (2, 2, True)
    assert m["accuracy"]["pass@1"] == 0.0 and set(m["by_level"]) == {"2", "5"}   # a random model
    assert results["hardware"]["description"] and results["summary"]["columns"] == [{"label": "pass@1", "k": 1}]
    import torch

    assert results["versions"]["torch"] == torch.__version__ and results["git_revision"]
    assert "| MATH-500 | 2/2 |" in (out / "results.md").read_text()
    _png_ok(out / "accuracy_vs_rollouts.png")
    # other settings in the same --out are refused; --overwrite starts afresh
    assert main(base + ["--limit", "1", "--max-tokens", "5"]) == 2
    assert "max_tokens: the run has 6, this command has 5" in capsys.readouterr().err
    assert main(base + ["--limit", "1", "--max-tokens", "5", "--overwrite"]) == 0
    assert len(_lines(out / "records.jsonl")) == 2


def test_tree_end_to_end(prepared_tiny, bench_data_dir, tmp_path, capsys):
    from rftt_plugin.search import Tree

    out = tmp_path / "tree"
    argv = ["eval", "--model", prepared_tiny, "--benchmarks", "gsm8k,aime24", "--limit", "2", "--mode", "tree",
            "--iterations", "1,2", "--step-max-tokens", "4", "--data-dir", bench_data_dir, "--out", str(out),
            "--quiet", "--concurrency", "4"]
    assert main(argv) == 0
    assert "| GSM8K | 2/2 |" in capsys.readouterr().out
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["aime24-0", "aime24-1", "gsm8k-0", "gsm8k-1"]
    for r in records:
        assert len(r["leaves"]) == 2 and set(r["budgets"]) == {"1", "2"}
        tree = Tree.load(out / r["tree_file"])
        assert tree.question == r["question"] and len(tree.iterations) == 2
        leaves = [LeafOutcome.from_dict(d) for d in r["leaves"]]
        assert node_stats(leaves) == {n.id: (n.Q, n.N) for n in tree.nodes[1:] if n.N}
        assert sum(lf.new_tokens for lf in leaves) == r["tokens"]
    results = json.loads((out / "results.json").read_text())
    assert [c["label"] for c in results["summary"]["columns"]] == ["k=1", "k=2"]
    assert results["search_reward"] == "answered" and results["selection"] == "policy"
    _png_ok(out / "accuracy_vs_rollouts.png")
    # A second run finds everything done and loads no model.
    assert main(argv) == 0
    assert "0 answered now, 4 resumed" in capsys.readouterr().out


def test_tree_mode_needs_a_prepared_model(tiny_model_dir, bench_data_dir, tmp_path, capsys):
    argv = ["eval", "--model", str(tiny_model_dir), "--benchmarks", "amc23", "--limit", "1", "--mode", "tree",
            "--iterations", "1", "--data-dir", bench_data_dir, "--out", str(tmp_path / "t"), "--quiet"]
    assert main(argv) == 2
    assert "rftt prepare-model" in capsys.readouterr().err
    # Nothing was finished, so other settings in the same --out are fine (text-mode tags).
    assert main(argv + ["--token-mode", "text", "--step-max-tokens", "3"]) == 0
    fp = json.loads((tmp_path / "t" / "run.json").read_text())["fingerprint"]
    assert fp["search"]["token_mode"] == "text"
