"""The per-step tree metrics (rftt_plugin.search.step_metrics) on hand-built rows; every expected
number below is worked out by hand from the rows, not by the function."""

from __future__ import annotations

import pytest

from rftt_plugin.search.step_metrics import step_metrics
from rftt_plugin.search.tree import FAULT_CAUSES


def _row(tree, steps, reason, acc, answered, fmt=1, dup=0):
    return {"rftt_leaf_steps": steps, "rftt_terminal_reason": reason, "rftt_format_ok": fmt,
            "rftt_leaf_duplicate": dup, "reward_extra_info": {"acc": acc, "has_answer": answered},
            "rftt_tree": tree}


TREE_A = {"uid": "A", "sessions": 4, "distinct_leaves": 3, "nodes": 10, "depth": 5, "llm_calls": 20,
          "token_ratio": 0.5, "tags": {"analyze": 2, "next_step": 6, "output": 2},
          "masked": {"step_error": 1}, "faults": {"step_error": 1}, "retries": 3, "prm_calls": 0,
          "prm_failures": 0, "policy_path_acc": 1.0, "prompt_tokens": 1000, "cached_tokens": 600}
TREE_B = {"uid": "B", "sessions": 4, "distinct_leaves": 2, "nodes": 6, "depth": 3, "llm_calls": 12,
          "token_ratio": 0.25, "tags": {"next_step": 4, "output": 2},
          "masked": {"grade_timeout": 1, "prm_error": 1}, "faults": {"grade_timeout": 1, "prm_error": 1},
          "retries": 1, "prm_calls": 5, "prm_failures": 1, "policy_path_acc": 0.0,
          "prompt_tokens": 0, "cached_tokens": None}


def _rows():
    # tree A: 3 rows (its 4th session was a step fault); tree B: 2 rows (two sessions faulted)
    return [_row(TREE_A, 3, "output", 1.0, 1.0), _row(TREE_A, 5, "depth", 0.0, 0.0, fmt=0),
            _row(TREE_A, 3, "output", 1.0, 1.0, dup=1),
            _row(TREE_B, 2, "output", 0.0, 1.0), _row(TREE_B, 4, "budget", 0.0, 0.0, fmt=0)]


def test_hand_worked_step():
    m = step_metrics(_rows())
    assert m["rftt/rows"] == 5 and m["rftt/trees"] == 2
    # leaves: means over the 5 trained rows
    assert m["rftt/leaf/steps_mean"] == pytest.approx((3 + 5 + 3 + 2 + 4) / 5)
    assert m["rftt/leaf/acc_mean"] == pytest.approx(2 / 5)
    assert m["rftt/leaf/answered_share"] == pytest.approx(3 / 5)
    assert m["rftt/leaf/format_ok_share"] == pytest.approx(3 / 5)
    assert m["rftt/leaf/duplicate_share"] == pytest.approx(1 / 5)
    assert m["rftt/leaf/terminal/output_share"] == pytest.approx(3 / 5)
    assert m["rftt/leaf/terminal/depth_share"] == pytest.approx(1 / 5)
    assert m["rftt/leaf/terminal/budget_share"] == pytest.approx(1 / 5)
    assert m["rftt/leaf/terminal/eos_share"] == 0.0 and m["rftt/leaf/terminal/response_length_share"] == 0.0
    # trees: once per uid although A has 3 rows and B 2
    assert m["rftt/tree/leaves_mean"] == 4.0
    assert m["rftt/tree/distinct_leaves_mean"] == pytest.approx(2.5)
    assert m["rftt/tree/nodes_mean"] == pytest.approx(8.0)
    assert m["rftt/tree/depth_mean"] == pytest.approx(4.0) and m["rftt/tree/depth_max"] == 5.0
    assert m["rftt/tree/llm_calls_mean"] == pytest.approx(16.0)
    assert m["rftt/tree/token_ratio_mean"] == pytest.approx(0.375)
    # tags: 16 steps in all; next_step 10, output 4, analyze 2
    assert m["rftt/tags/next_step_share"] == pytest.approx(10 / 16)
    assert m["rftt/tags/output_share"] == pytest.approx(4 / 16)
    assert m["rftt/tags/analyze_share"] == pytest.approx(2 / 16)
    assert m["rftt/tags/verify_share"] == 0.0
    assert m["rftt/policy_path_acc"] == pytest.approx(0.5)
    # faults: sums over the trees, every cause present
    assert {k: m[f"rftt/masked/{k}"] for k in FAULT_CAUSES} == {"step_error": 1.0, "grade_timeout": 1.0,
                                                                "grade_error": 0.0, "prm_error": 1.0}
    assert m["rftt/masked/total"] == 3.0
    assert m["rftt/faults/failed_steps"] == 1.0 and m["rftt/faults/retried_calls"] == 4.0
    assert m["rftt/grader/timeouts"] == 1.0 and m["rftt/grader/errors"] == 0.0
    assert m["rftt/prm/calls"] == 5.0 and m["rftt/prm/failures"] == 1.0
    # cache share only over trees whose engine reported it (B did not)
    assert m["rftt/readout/cache_share"] == pytest.approx(0.6)
    assert all(isinstance(v, float) for v in m.values())


def test_missing_pieces_are_skipped_not_guessed():
    assert step_metrics([]) == {}
    assert step_metrics([None, "x", 3]) == {}
    m = step_metrics([{"rftt_leaf_steps": 2}])  # a row without its tree (an older plugin's row)
    assert m == {"rftt/rows": 1.0, "rftt/trees": 0.0, "rftt/leaf/steps_mean": 2.0}
    tree = {"uid": "T", "policy_path_acc": None, "tags": {"bogus": 3}}
    m = step_metrics([{"rftt_tree": tree}])
    assert "rftt/policy_path_acc" not in m and not [k for k in m if k.startswith("rftt/tags/")]
    assert "rftt/readout/cache_share" not in m and m["rftt/masked/total"] == 0.0


def test_transfer_queue_wrapped_rows_are_unwrapped():
    class Wrapped:  # TransferQueue returns non-tensor fields as NonTensorData(data=...)
        def __init__(self, data):
            self.data = data

    plain = step_metrics(_rows())
    assert step_metrics([Wrapped(r) for r in _rows()]) == plain
