"""Behaviour guard of issue #30: the search builds the same trees as before the refactor.

The fixture was recorded from commit 034bcc8 (pre-refactor) by tests/trees_regression.py (its
docstring says how to re-record). Ids, tags, structure and visit counts must match exactly;
floats (log-probs, values) to a tolerance, because the hf trees come from float32 forward passes
whose last bits may differ between CPUs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.trees_regression import build_models, fake_trees, hf_trees

FIXTURE = Path(__file__).parent / "fixtures" / "trees_before_30.json"


def _diff(want, got, where: str, tol: float) -> str | None:
    """The first difference between two JSON values (None when equal within ``tol``)."""
    if isinstance(want, float) or isinstance(got, float):
        if isinstance(want, (int, float)) and isinstance(got, (int, float)) and math.isclose(
                want, got, rel_tol=tol, abs_tol=tol):
            return None
        return f"{where}: {want!r} != {got!r}"
    if isinstance(want, dict) and isinstance(got, dict):
        if want.keys() != got.keys():
            return f"{where}: keys {sorted(want.keys() ^ got.keys())} differ"
        return next((d for k in want if (d := _diff(want[k], got[k], f"{where}.{k}", tol))), None)
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return f"{where}: length {len(want)} != {len(got)}"
        return next((d for i, (a, b) in enumerate(zip(want, got)) if (d := _diff(a, b, f"{where}[{i}]", tol))), None)
    return None if want == got else f"{where}: {want!r} != {got!r}"


def test_diff_reports_a_changed_token_id_and_a_far_float():
    tree = {"nodes": [{"token_ids": [1, 2], "Q": 0.5}]}
    assert _diff(tree, json.loads(json.dumps(tree)), "t", 1e-6) is None
    assert _diff(tree, {"nodes": [{"token_ids": [1, 3], "Q": 0.5}]}, "t", 1e-6) == "t.nodes[0].token_ids[1]: 2 != 3"
    assert _diff(tree, {"nodes": [{"token_ids": [1, 2], "Q": 0.5 + 1e-9}]}, "t", 1e-6) is None
    assert _diff(tree, {"nodes": [{"token_ids": [1, 2], "Q": 0.6}]}, "t", 1e-6) == "t.nodes[0].Q: 0.5 != 0.6"


# Search knobs added after the recording (issue 24), each with the value that keeps the faithful
# search: a rebuilt tree must carry exactly these values; then the rest must match the recording.
NEW_SEARCH_KEYS = {"samples_per_tag": 1, "blocked_tags": []}


def _without_new_keys(trees: dict) -> dict:
    for name, tree in trees.items():
        config = tree["meta"]["config"]
        added = {k: config.pop(k) for k in NEW_SEARCH_KEYS if k in config}
        assert added == NEW_SEARCH_KEYS, f"{name}: new search keys {added} (want the faithful {NEW_SEARCH_KEYS})"
    return trees


@pytest.fixture(scope="module")
def recorded():
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_fake_backend_trees_unchanged(recorded):
    got = _without_new_keys(fake_trees())
    assert sorted(got) == sorted(recorded["fake"])
    for name, tree in recorded["fake"].items():
        assert _diff(tree, got[name], name, 1e-9) is None, _diff(tree, got[name], name, 1e-9)


def test_hf_backend_trees_unchanged(recorded, tmp_path):
    got = _without_new_keys(hf_trees(*build_models(str(tmp_path))))
    assert sorted(got) == sorted(recorded["hf"])
    for name, tree in recorded["hf"].items():
        assert _diff(tree, got[name], name, 1e-4) is None, _diff(tree, got[name], name, 1e-4)
