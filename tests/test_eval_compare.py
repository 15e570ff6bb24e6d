"""Self-consistency (``rftt eval --mode sc``) and the comparison of modes (``--mode chain,sc,tree``):
the vote against a plain count, hand-worked comparison numbers, and the command end to end."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from rftt_plugin.backends.base import Generation
from rftt_plugin.data.benchmarks import BenchmarkItem
from rftt_plugin.evaluation.compare import compare, markdown
from rftt_plugin.evaluation.runners import SampleSettings, run_self_consistency, sample_seed


class SeededAnswers:
    """Boxes 7 (the gold) or 8, decided by the request's seed; one id per character."""

    def __init__(self):
        self.seeds = []

    async def generate(self, ids, params):
        self.seeds.append(params.seed)
        answer = "8" if params.seed % 3 == 0 else "7"
        text = f"<output>\\boxed{{{answer}}}</output>" + " pad" * (params.seed % 4)
        return Generation([ord(c) for c in text], [0.0] * len(text), "stop")


def _item():
    return BenchmarkItem(id="gsm8k-0", question="What is 3 plus 4 ?", gold="7", metadata={})


def test_self_consistency_votes_like_a_plain_count():
    backend = SeededAnswers()
    settings = SampleSettings(samples=8, max_tokens=64, temperature=0.7, seed=5)
    record = asyncio.run(run_self_consistency(_item(), backend, lambda q: [1, 2, 3],
                                              lambda ids: "".join(map(chr, ids)), settings, [1, 2, 4, 8]))
    seeds = [sample_seed(5, "What is 3 plus 4 ?", i) for i in range(8)]
    assert sorted(backend.seeds) == sorted(seeds) and len(set(seeds)) == 8
    answers = ["8" if s % 3 == 0 else "7" for s in seeds]
    lengths = [len("<output>\\boxed{7}</output>") + 4 * (s % 4) for s in seeds]
    for k in (1, 2, 4, 8):   # reference: a plain vote count, ties to the answer seen first
        count = Counter(answers[:k])
        top = max(count.values())
        winner = next(a for a in answers[:k] if count[a] == top)
        budget = record["budgets"][str(k)]
        assert (budget["pred"], budget["acc"]) == (winner, winner == "7")
        assert budget["tokens"] == sum(lengths[:k])
        assert budget["pass_any"] == ("7" in answers[:k])
    assert record["mode"] == "sc" and len(record["responses"]) == 8


def test_a_failed_sample_fails_the_question_not_the_vote():
    from rftt_plugin.evaluation.runners import QuestionFailed

    class Broken(SeededAnswers):
        async def generate(self, ids, params):
            return Generation.failed("server gone") if params.seed % 2 else await super().generate(ids, params)

    with pytest.raises(QuestionFailed, match="gsm8k-0: .* samples failed: server gone"):
        asyncio.run(run_self_consistency(_item(), Broken(), lambda q: [1], lambda ids: "", SampleSettings(samples=6),
                                         [1]))


def test_majority_ties_go_to_the_policys_most_probable_tag_path():
    from rftt_plugin.evaluation.selection import LeafOutcome, select_answer

    def leaf(pred, cls, nodes, reward, path_logprob):
        return LeafOutcome(pred=pred, acc=False, valid=True, format_ok=True, reward=reward, node_ids=nodes,
                           answer_class=cls, path_logprob=path_logprob)

    # One vote each. "deep" is worth more (reward 1 on both of its nodes vs 0), but its tags are
    # unlikely (log-prob -9.2 against -0.1): the tie goes to the path the policy prefers.
    leaves = [leaf("deep", 0, (1, 2), 1.0, -9.2), leaf("greedy", 1, (3,), 0.0, -0.1)]
    assert select_answer(leaves, "majority").pred == "greedy"
    assert select_answer(leaves, "value").pred == "deep"          # the value rule ignores the policy
    # More votes still win over a more probable single path.
    leaves.append(leaf("deep", 0, (1, 4), 1.0, -12.0))
    assert select_answer(leaves, "majority").pred == "deep"
    # Equal tag paths (e.g. siblings of one tag): the summed value decides, as before.
    tied = [leaf("a", 0, (5,), 0.0, -0.5), leaf("b", 1, (6,), 1.0, -0.5)]
    assert select_answer(tied, "majority").pred == "b"


def test_policy_rule_weighs_distinct_leaves_by_the_policys_tag_path_probability():
    import math

    from rftt_plugin.evaluation.selection import LeafOutcome, select_answer

    def leaf(pred, cls, nodes, path_logprob):
        return LeafOutcome(pred=pred, acc=False, valid=True, format_ok=True, reward=1.0, node_ids=nodes,
                           answer_class=cls, path_logprob=path_logprob)

    own = leaf("own", 0, (1, 2), math.log(0.9))
    forced = leaf("forced", 1, (3, 4), math.log(1e-4))
    # re-emitted three times, the forced path has 3 votes to 1: majority follows it, policy does not
    leaves = [own, forced, forced, forced]
    assert select_answer(leaves, "majority").pred == "forced"
    assert select_answer(leaves, "policy").pred == "own"
    # two plausible strategies both count: 0.3 + 0.3 (distinct leaves) beat 0.4
    a1, a2 = leaf("a", 0, (1,), math.log(0.3)), leaf("a", 0, (2,), math.log(0.3))
    b = leaf("b", 1, (3,), math.log(0.4))
    assert select_answer([b, a1, a2], "policy").pred == "a"
    assert select_answer([b, a1, a1], "policy").pred == "b"     # the same leaf twice weighs once
    # chains (no nodes, path_logprob 0) all weigh 1: policy is plain majority
    chains = [leaf("x", 0, (), 0.0), leaf("y", 1, (), 0.0), leaf("y", 1, (), 0.0)]
    assert select_answer(chains, "policy").pred == "y"


def _rec(mode, qid, accs, tokens):
    """A hand-made record: chain (one answer) or sc/tree (one leaf per rollout, distinct answers)."""
    if mode == "chain":
        return {"id": qid, "benchmark": "toy", "mode": "chain", "acc": accs[0], "has_answer": True,
                "format_ok": True, "tokens": tokens[0]}
    leaves = [{"pred": "right" if a else f"wrong{i}", "acc": a, "valid": True, "format_ok": True, "reward": 0.0,
               "node_ids": [], "new_tokens": t, "answer_class": 0 if a else i + 1, "terminal_reason": "output"}
              for i, (a, t) in enumerate(zip(accs, tokens))]
    return {"id": qid, "benchmark": "toy", "mode": mode, "leaves": leaves}


def test_comparison_numbers_by_hand():
    # 3 questions. chain: right on q0 only. sc leaves (k=1, k=2): q0 [T, F], q1 [F, T], q2 [F, F];
    # at k=2 the two answers differ, so the first one wins: sc@2 = sc@1 = q0 only.
    # tree: q0 [T, T], q1 [T, F], q2 [T, T] -> k=1 all right; k=2: q1 tie -> first (right).
    records = {
        "chain": [_rec("chain", "q0", [True], [10]), _rec("chain", "q1", [False], [10]),
                  _rec("chain", "q2", [False], [40])],
        "sc": [_rec("sc", "q0", [True, False], [10, 10]), _rec("sc", "q1", [False, True], [10, 20]),
               _rec("sc", "q2", [False, False], [10, 10])],
        "tree": [_rec("tree", "q0", [True, True], [15, 5]), _rec("tree", "q1", [True, False], [15, 0]),
                 _rec("tree", "q2", [True, True], [15, 10]), _rec("tree", "q9", [True], [1])],  # q9: tree only
    }
    result = compare(records, [1, 2])
    assert result["questions"] == 3
    got = {(p["mode"], p["label"]): (p["correct"], p["tokens_per_question"]) for p in result["points"]}
    assert got == {("chain", "pass@1"): (1, 20.0), ("sc", "k=1"): (1, 10.0), ("sc", "k=2"): (1, 70 / 3),
                   ("tree", "k=1"): (3, 15.0), ("tree", "k=2"): (3, 20.0)}
    tests = {(t["a"], t["b"]): t for t in result["paired"]}
    t = tests[("chain pass@1", "tree k=2")]
    assert (t["gained"], t["lost"], t["p"]) == (2, 0, 0.5)
    # Wilson 3/3, by hand: centre (1 + z²/6)/(1 + z²/3) = 0.7192, half (z²/6)/(1 + z²/3) = 0.2807 -> 43.9%
    # equal tokens: tree k=1 (15 tok/q) meets sc k=2 (23.3); tree k=2 (20) also sc k=2
    assert ("sc k=2", "tree k=1") in tests and ("sc k=2", "tree k=2") in tests
    assert "| tree search | k=2 | 100.0% [43.9, 100.0] | 20 |" in markdown(result)


def test_eval_chain_sc_tree_end_to_end(prepared_model_dir, bench_data_dir, tmp_path, capsys):
    from rftt_plugin.cli import main

    out = tmp_path / "cmp"
    argv = ["eval", "--model", str(prepared_model_dir), "--benchmarks", "gsm8k", "--limit", "2",
            "--mode", "chain,sc,tree", "--iterations", "1,2", "--max-tokens", "6", "--step-max-tokens", "4",
            "--data-dir", bench_data_dir, "--out", str(out), "--quiet", "--concurrency", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "rftt eval: chain vs self-consistency vs tree search" in printed
    for mode in ("chain", "sc", "tree"):
        assert len((out / mode / "records.jsonl").read_text().splitlines()) == 2
    sc = [json.loads(x) for x in (out / "sc" / "records.jsonl").read_text().splitlines()]
    assert all(len(r["leaves"]) == 2 and all(lf["new_tokens"] <= 6 for lf in r["leaves"]) for r in sc)
    result = json.loads((out / "compare.json").read_text())
    assert result["questions"] == 2
    assert {(p["mode"], p["label"]) for p in result["points"]} == {
        ("chain", "pass@1"), ("sc", "k=1"), ("sc", "k=2"), ("tree", "k=1"), ("tree", "k=2")}
    assert (out / "accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(argv) == 0   # resumes: every mode finds its questions done
    assert capsys.readouterr().out.count("0 answered now, 2 resumed") == 3


def test_several_modes_load_an_hf_model_once_and_answer_as_separate_runs(prepared_model_dir, bench_data_dir,
                                                                         tmp_path, monkeypatch):
    """`--mode chain,sc,tree` builds one engine for the three modes and closes it at the end; every
    request carries its own seed, so each mode's records equal those of a run of that mode alone."""
    import rftt_plugin.backends.engine as engine_mod
    from rftt_plugin.cli import main

    built, closes, real = [], [], engine_mod.make_engine

    def counting(*args, **kwargs):
        engine = real(*args, **kwargs)
        aclose = engine.backend.aclose

        async def counted_aclose():  # which modes had written answers when the engine was closed
            closes.append({m for m in ("chain", "sc", "tree") if (tmp_path / "all" / m / "records.jsonl").is_file()})
            await aclose()

        engine.backend.aclose = counted_aclose
        built.append(engine)
        return engine

    monkeypatch.setattr(engine_mod, "make_engine", counting)
    # one question in flight: every batch holds one request, so logits cannot depend on the batch's make-up
    common = ["eval", "--model", str(prepared_model_dir), "--benchmarks", "gsm8k", "--limit", "2",
              "--iterations", "1,2", "--max-tokens", "6", "--step-max-tokens", "4", "--data-dir", bench_data_dir,
              "--quiet", "--concurrency", "1"]
    assert main(common + ["--mode", "chain,sc,tree", "--out", str(tmp_path / "all")]) == 0
    assert len(built) == 1  # one engine for the three modes ...
    assert closes and all(c == {"chain", "sc", "tree"} for c in closes)  # ... closed only after the last one
    assert len((tmp_path / "all" / "tree" / "records.jsonl").read_text().splitlines()) == 2

    def answers(path):
        """Per question: the chain's text, the sampled chains' texts, and each leaf's answer, tokens and path."""
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        return {r["id"]: (r.get("response"), r.get("responses"),
                          [(lf.get("pred"), lf.get("new_tokens"), lf.get("node_ids")) for lf in r.get("leaves") or []])
                for r in rows}

    for mode in ("chain", "sc", "tree"):
        assert main(common + ["--mode", mode, "--out", str(tmp_path / mode)]) == 0
        assert answers(tmp_path / "all" / mode / "records.jsonl") == answers(tmp_path / mode / "records.jsonl")
    assert len(built) == 4  # one engine per single-mode run


def test_eval_mode_names_are_checked(capsys):
    from rftt_plugin.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--model", "m", "--out", "o", "--mode", "chain,beam"])
    assert "'chain,beam': choose from chain, sc, tree" in capsys.readouterr().err


def test_tree_search_can_back_up_a_prm_path_score(tmp_path):
    """--search-reward prm: an answering leaf backs up the PRM's path score (min over its steps),
    every other leaf 0; the PRM saw each answering path's steps."""
    from rftt_plugin.backends.fake import FakeVocab
    from rftt_plugin.evaluation.job import EvalConfig, EvalError, evaluate
    from tests.prm_server import PRMServer
    from tests.test_evaluate import _fake

    path = tmp_path / "sevens.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} plus {7 - i} ?", "answer": "#### 7"}) + "\n"
                            for i in range(3)))
    backend, tag_ids = _fake()
    with PRMServer(step_score=0.25, last_score=0.625) as server:
        cfg = EvalConfig(model="fake-policy", out=str(tmp_path / "prm"), mode="tree", rollouts=[1, 4], benchmarks=["gsm8k"],
                         sources={"gsm8k": str(path)}, progress=False, step_max_tokens=64, concurrency=2,
                         search_reward="prm", prm_url=server.url)
        res = evaluate(cfg, backend=backend, layout=tag_ids, tokenizer=FakeVocab())
        assert (res.ran, res.failed) == (3, [])
        assert server.requests   # the PRM was asked
        step_counts = [text.count("ки") for batch in server.requests for text in batch]
    records = [json.loads(x) for x in (tmp_path / "prm" / "records.jsonl").read_text().splitlines()]
    for r in records:
        for leaf in r["leaves"]:
            # min over the steps: 0.25 with two or more steps, 0.625 for a one-step path; no answer: 0
            assert leaf["reward"] == (0.0 if leaf["pred"] is None else 0.25), leaf
    assert min(step_counts) >= 2
    with pytest.raises(EvalError, match="--search-reward prm and --prm-url go together"):
        EvalConfig(model="m", out=str(tmp_path / "x"), mode="tree", search_reward="prm").validate()


def test_self_consistency_with_a_prm_weighs_the_votes():
    """sc + --search-reward prm: each chain's reward is the PRM's path score; ``value`` is then a
    PRM-weighted vote. The toy's step checker approves 3 + 4 = 7 and refuses 3 + 4 = 8."""
    from rftt_plugin.demo.toy_prm import ToyPRMServer
    from rftt_plugin.reward.prm import HttpStepScorer

    class Checked(SeededAnswers):
        async def generate(self, ids, params):
            answer = "7" if params.seed % 4 == 0 else "8"   # mostly wrong: majority says 8
            text = f"<output>3 + 4 = {answer}, so \\boxed{{{answer}}}</output>"
            return Generation([ord(c) for c in text], [0.0] * len(text), "stop")

    settings = SampleSettings(samples=8, max_tokens=64, seed=1)
    seeds = [sample_seed(1, "What is 3 plus 4 ?", i) for i in range(8)]
    answers = ["7" if s % 4 == 0 else "8" for s in seeds]
    assert 0 < answers.count("7") < answers.count("8")   # the case worth testing
    with ToyPRMServer() as server:
        prm = HttpStepScorer(url=server.url, timeout_s=5, retries=0)
        for rule, want in (("majority", "8"), ("value", "7")):
            record = asyncio.run(run_self_consistency(_item(), Checked(), lambda q: [1], lambda ids: "".join(map(chr, ids)),
                                                      settings, [8], rule, prm=prm))
            assert [lf["reward"] for lf in record["leaves"]] == [1.0 if a == "7" else 0.0 for a in answers]
            assert record["budgets"]["8"]["pred"] == want, rule


def test_a_dead_prm_is_one_clear_error_before_any_question(tmp_path):
    import socket

    from rftt_plugin.backends.fake import FakeVocab
    from rftt_plugin.evaluation.job import EvalConfig, EvalError, evaluate
    from tests.test_evaluate import _fake

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/get_reward"
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "What is 3 plus 4 ?", "answer": "#### 7"}) + "\n")
    backend, tag_ids = _fake()
    cfg = EvalConfig(model="fake-policy", out=str(tmp_path / "run"), mode="tree", rollouts=[2], benchmarks=["gsm8k"],
                     sources={"gsm8k": str(path)}, progress=False, search_reward="prm", prm_url=url)
    with pytest.raises(EvalError, match=r"--prm-url http://127\.0\.0\.1:\d+/get_reward: the PRM did not score a test path"):
        evaluate(cfg, backend=backend, layout=tag_ids, tokenizer=FakeVocab())
    records = tmp_path / "run" / "records.jsonl"
    assert not records.exists() or records.read_text(encoding="utf-8") == ""   # no question was answered
