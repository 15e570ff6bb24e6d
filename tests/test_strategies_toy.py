"""The strategies toy (issue 24 item 2): four correct ways per sum, and the per-opening report."""

import json
import random
import re

import pytest

from rftt_plugin.demo.strategies import first_leaf_per_opening, load_tree_run, opening_stats, strategy_table
from rftt_plugin.demo.synthetic import (STRATEGIES, STRATEGY_OPENING, strategy_sample, strategy_solution,
                                        strategy_steps, sum_problems)
from rftt_plugin.tokens import validate

_EQ = re.compile(r"^(-?\d+) ([+-]) (\d+) = (-?\d+)$")


def _facts(text):
    """Every 'x +/- y = z' step of a rendered solution, as numbers (a parser independent of the toy)."""
    out = []
    for m in re.finditer(r"<(next_step|refine)>\n?(.*?)\n?</\1>", text, re.DOTALL):
        fact = _EQ.match(m.group(2).strip())
        assert fact, m.group(2)
        x, sign, y, z = fact.groups()
        out.append((int(x), sign, int(y), int(z)))
    return out


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "direct"])
def test_each_step_strategy_is_true_arithmetic_ending_in_the_answer(strategy):
    for p in sum_problems(seed=3)[:200]:
        text = strategy_solution(p, strategy)
        assert validate(text).ok
        facts = _facts(text)
        assert len(facts) == 3
        for x, sign, y, z in facts:
            assert z == (x + y if sign == "+" else x - y), (p.expression, strategy, facts)
        assert facts[-1][3] == eval(p.expression) == p.answer
        assert re.search(r"<output>\n?The answer is \\boxed\{(-?\d+)\}\.\n?</output>", text).group(1) == str(p.answer)


def test_the_strategies_use_different_facts_and_open_with_their_own_tag():
    from rftt_plugin.demo.synthetic import Problem

    p = Problem("x", "What is 4 + 1 + 3 - 5?", "4 + 1 + 3 - 5", 3, ())
    firsts = {s: _facts(strategy_solution(p, s)) for s in STRATEGIES if s != "direct"}
    assert firsts["left_to_right"] == [(4, "+", 1, 5), (5, "+", 3, 8), (8, "-", 5, 3)]
    assert firsts["right_to_left"] == [(3, "-", 5, -2), (1, "-", 2, -1), (4, "-", 1, 3)]
    assert firsts["pairs"] == [(4, "+", 1, 5), (3, "-", 5, -2), (5, "-", 2, 3)]
    for s, tag in STRATEGY_OPENING.items():
        assert strategy_solution(p, s).lstrip().startswith(f"<{tag.value}>")
    assert "<direct_answer>" in strategy_solution(p, "direct")


def test_self_correct_samples_slip_then_verify_and_refine_to_the_true_step():
    rng = random.Random(0)
    for p in sum_problems(seed=2)[:50]:
        for s in ("left_to_right", "right_to_left", "pairs"):
            text = strategy_solution(p, s, self_correct=True, rng=rng)
            assert validate(text).ok and "<verify>" in text and "<refine>" in text
            facts = _facts(text)
            slip, fixed = facts[-2], facts[-1]
            assert slip[:3] == fixed[:3] and slip[3] != fixed[3] and fixed[3] == p.answer


def test_direct_answers_are_only_sampled_on_all_plus_sums():
    rng = random.Random(0)
    seen = {"plus": set(), "minus": set()}
    for p in sum_problems(seed=0)[:400]:
        kind, text = strategy_sample(p, rng)
        seen["minus" if " - " in p.expression else "plus"].add(kind.split("+")[0])
        assert validate(text).ok
    assert seen["plus"] == set(STRATEGIES)
    assert seen["minus"] == set(STRATEGIES) - {"direct"}


def test_strategy_steps_refuses_other_shapes():
    from rftt_plugin.demo.synthetic import Problem

    with pytest.raises(ValueError, match="four operands"):
        strategy_steps(Problem("x", "What is 1 + 2?", "1 + 2", 3, ()), "pairs")
    with pytest.raises(ValueError, match="unknown strategy"):
        strategy_steps(sum_problems()[0], "sideways")


def _write_run(tmp_path):
    """Two questions; hand-made trees whose root children carry known priors and first leaves."""
    run = tmp_path / "tree"
    (run / "trees").mkdir(parents=True)
    trees = {
        "q1": {"nodes": [{"id": 0, "parent": None, "tag": None},
                         {"id": 1, "parent": 0, "tag": "next_step", "prior": 0.6},
                         {"id": 2, "parent": 0, "tag": "clarify", "prior": 0.4},
                         {"id": 3, "parent": 1, "tag": "next_step"}]},
        "q2": {"nodes": [{"id": 0, "parent": None, "tag": None},
                         {"id": 1, "parent": 0, "tag": "next_step", "prior": 0.2},
                         {"id": 2, "parent": 0, "tag": "clarify", "prior": 0.8}]},
    }
    records = [
        {"id": "q1", "question": "What is 1 + 2 + 3 + 4?",
         "leaves": [{"node_ids": [1, 3], "acc": True}, {"node_ids": [2], "acc": True},
                    {"node_ids": [1], "acc": False}]},  # a later leaf under next_step does not count
        {"id": "q2", "question": "What is 1 + 2 + 3 - 4?",
         "leaves": [{"node_ids": [2], "acc": False}, {"node_ids": [1], "acc": True}]},
    ]
    for tid, tree in trees.items():
        (run / "trees" / f"{tid}.json").write_text(json.dumps(tree))
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_opening_stats_by_hand(tmp_path):
    records, trees = load_tree_run(_write_run(tmp_path))
    assert {t: leaf["node_ids"] for t, leaf in first_leaf_per_opening(records[0], trees["q1"]).items()} == \
        {"next_step": [1, 3], "clarify": [2]}
    stats = opening_stats(records, trees)
    assert stats["next_step"].share_sum == pytest.approx(0.8) and stats["clarify"].share_sum == pytest.approx(1.2)
    assert dict(stats["next_step"].right) == {"plus": 1, "minus": 1}
    assert dict(stats["clarify"].right) == {"plus": 1, "minus": 0}
    table = strategy_table({"m": tmp_path / "tree"})
    # clarify: share 1.2 / 2 = 60%, right 1 of 2; next_step: 40%, 2 of 2
    assert "| m | `<clarify>` (direct) | 60.0% | 50.0% [" in table
    assert "| m | `<next_step>` (right_to_left) | 40.0% | 100.0% [" in table
    assert table.index("<clarify>") < table.index("<next_step>")  # sorted by share


def test_an_opening_without_a_leaf_is_a_dash_not_an_error(tmp_path):
    run = _write_run(tmp_path)
    records = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]
    for r in records:
        r["leaves"] = [leaf for leaf in r["leaves"] if leaf["node_ids"][0] != 2]  # no leaf under clarify
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert "| m | `<clarify>` (direct) | 60.0% | - | - | - |" in strategy_table({"m": run})


def test_a_missing_tree_names_the_file(tmp_path):
    run = _write_run(tmp_path)
    (run / "trees" / "q2.json").unlink()
    with pytest.raises(FileNotFoundError, match="q2.json"):
        load_tree_run(run)
    with pytest.raises(FileNotFoundError, match="records.jsonl"):
        load_tree_run(tmp_path)


def test_a_broken_record_line_names_file_and_line(tmp_path):
    run = _write_run(tmp_path)
    lines = (run / "records.jsonl").read_text().splitlines()
    (run / "records.jsonl").write_text(lines[0] + "\n" + lines[1][:20] + "\n")  # a cut-off second record
    with pytest.raises(ValueError, match=r"records.jsonl:2: not a JSON record"):
        load_tree_run(run)


def _node(i, parent, tag, text="", prior=0.0, children=(), generated=True):
    return {"id": i, "parent": parent, "tag": tag, "text": text, "prior": prior, "children": list(children),
            "generated": generated}


def test_verify_priors_compare_the_check_after_a_slip_with_the_check_after_right_steps(tmp_path):
    """Hand-made tree for 1 + 2 + 3 + 4: a left-to-right path with a slip on its last step (3 + 3 = 6,
    then 6 + 4 = 11: false), a right one (6 + 4 = 10), a direct answer (1 + 2 + 3 + 4 = 10, right),
    and nodes that must not count: a step before the sum is complete, a node after a check, and a
    verify child that was never generated under a node that was not generated either."""
    from rftt_plugin.demo.strategies import checked_leaves, verify_prior_table, verify_priors

    nodes = [_node(0, None, None, children=[1, 20]),
             _node(1, 0, "analyze", "Add from left to right.", children=[2]),
             _node(2, 1, "next_step", "1 + 2 = 3", children=[3, 9]),
             _node(9, 2, "verify", prior=0.9, generated=False),              # before the sum is done: skipped
             _node(3, 2, "next_step", "3 + 3 = 6", children=[4, 5]),
             _node(9 + 1, 3, "verify", prior=0.0),
             _node(4, 3, "next_step", "6 + 4 = 11", children=[6, 7]),        # false: 10
             _node(6, 4, "verify", prior=0.30, children=[11]),
             _node(7, 4, "output", prior=0.70),
             _node(11, 6, "refine", "6 + 4 = 10", children=[12]),
             _node(12, 11, "next_step", "10 + 0 = 10", children=[13]),      # after a check: skipped
             _node(13, 12, "verify", prior=0.99),
             _node(5, 3, "next_step", "6 + 4 = 10", children=[8]),           # right
             _node(8, 5, "verify", prior=0.10),
             _node(20, 0, "direct_answer", "1 + 2 + 3 + 4 = 10", children=[21]),
             _node(21, 20, "verify", prior=0.20),
             _node(22, 0, "direct_answer", "1 + 2 + 3 + 4 = 12", children=[23], generated=False),
             _node(23, 22, "verify", prior=0.5)]
    p = verify_priors({"q": {"nodes": nodes}})
    assert p.after_false == [0.30]
    assert sorted(p.after_true) == [0.10, 0.20]
    run = tmp_path / "tree"
    (run / "trees").mkdir(parents=True)
    (run / "trees" / "q.json").write_text(json.dumps({"nodes": nodes}))
    # leaves: through the check after the slip (right after <refine>), through the check after the
    # slip again (a second, wrong leaf), through the check of the direct answer (right), and a leaf
    # without a check (not counted)
    leaves = [{"node_ids": [1, 2, 3, 4, 6, 11, 12], "acc": True}, {"node_ids": [1, 2, 3, 4, 6], "acc": False},
              {"node_ids": [20, 21], "acc": True}, {"node_ids": [1, 2, 3, 5], "acc": True}]
    record = {"id": "q", "question": "What is 1 + 2 + 3 + 4?", "leaves": leaves}
    (run / "records.jsonl").write_text(json.dumps(record) + "\n")
    assert checked_leaves([record], {"q": {"nodes": nodes}}) == {"after_false": [2, 1], "after_true": [1, 1]}
    assert "| m | 1, 0.300 | 2, 0.150 | 1 / 2 (50%) | 1 / 1 (100%) |" in verify_prior_table({"m": run})


@pytest.mark.parametrize("response, gold, right, kind", [
    ("<next_step>\n2 + 2 = 5\n</next_step>\n<verify>\n2 + 2 is not 5.\n</verify>\n<refine>\n2 + 2 = 4\n</refine>\n"
     "<output>\nThe answer is \\boxed{4}.\n</output>", "4", True, "checked_wrong_fixed"),
    ("<next_step>\n2 + 2 = 5\n</next_step>\n<verify>\nLooks fine.\n</verify>\n<output>\n\\boxed{5}\n</output>",
     "4", False, "checked_wrong_kept"),
    # true arithmetic but the wrong result for the question (a wrong operand): wrong before the check
    ("<next_step>\n2 + 3 = 5\n</next_step>\n<verify>\nOK\n</verify>\n<output>\n\\boxed{4}\n</output>",
     "4", True, "checked_wrong_fixed"),
    ("<next_step>\n2 + 2 = 4\n</next_step>\n<verify>\nOK\n</verify>\n<output>\n\\boxed{4}\n</output>",
     "4", True, "checked_right"),
    ("<next_step>\n2 + 2 = 4\n</next_step>\n<output>\n\\boxed{4}\n</output>", "4", True, "unchecked_right"),
    ("<next_step>\n2 + 2 = 4\n</next_step>\n<output>\n\\boxed{5}\n</output>", "4", False, "unchecked_wrong"),
    ("", "4", False, "unchecked_wrong"),                                     # empty response
    ("<next_step>\n2 + 2 = 4", "4", False, "unchecked_wrong"),               # cut off: read leniently
])
def test_self_check_kind_by_hand(response, gold, right, kind):
    from rftt_plugin.demo.strategies import self_check_kind

    assert self_check_kind(response, gold, right) == kind


def test_self_check_table_counts_a_chain_run(tmp_path):
    from rftt_plugin.demo.strategies import self_check_table

    run = tmp_path / "chain"
    run.mkdir()
    fixed = ("<next_step>\n2 + 2 = 5\n</next_step>\n<verify>\nno\n</verify>\n<refine>\n2 + 2 = 4\n</refine>\n"
             "<output>\n\\boxed{4}\n</output>")
    plain = "<next_step>\n2 + 2 = 4\n</next_step>\n<output>\n\\boxed{4}\n</output>"
    rows = [{"id": "a", "gold": "4", "acc": True, "response": fixed},
            {"id": "b", "gold": "4", "acc": True, "response": plain},
            {"id": "c", "gold": "5", "acc": False, "response": plain},
            {"id": "d", "gold": "4", "acc": True, "response": plain}]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # wrong attempts: a (checked, fixed) and c (never checked); right attempts: b and d, never checked
    assert "| m | 4 | 1 / 2 (50.0%) | 1 / 1 (100.0%) | 0 / 2 (0.0%) |" in self_check_table({"m": run})
    # a self-consistency run: every sampled chain counts, graded by its leaf
    sc = tmp_path / "sc"
    sc.mkdir()
    kept = "<next_step>\n2 + 2 = 5\n</next_step>\n<verify>\nfine\n</verify>\n<output>\n\\boxed{5}\n</output>"
    checked_right = "<next_step>\n2 + 2 = 4\n</next_step>\n<verify>\nfine\n</verify>\n<output>\n\\boxed{4}\n</output>"
    row = {"id": "a", "gold": "4", "responses": [fixed, kept, checked_right, plain],
           "leaves": [{"acc": True}, {"acc": False}, {"acc": True}, {"acc": True}]}
    (sc / "records.jsonl").write_text(json.dumps(row) + "\n")
    # wrong attempts: fixed, kept (both checked); right: checked_right (checked), plain (not)
    assert "| s | 4 | 2 / 2 (100.0%) | 1 / 2 (50.0%) | 1 / 2 (50.0%) |" in self_check_table({"s": sc})
