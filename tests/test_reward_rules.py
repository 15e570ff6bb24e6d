"""The reward-rule registry: every rule against a hand-worked table, the PRM need per rule, and
the grader scoring through the registry (a rule registered here is what score_response applies)."""

from __future__ import annotations

import pytest

from rftt_plugin.reward import rules
from rftt_plugin.reward.rules import PRM_RULES, REWARD_RULES, needs_prm_score, register_rule, reward_rule
from rftt_plugin.reward.score import score_response

# (rule, correct, has_answer, prm) -> score, worked out by hand from the paper / reference formulas
TABLE = [
    ("rftt", True, True, None, 1.0), ("rftt", False, True, None, 0.1), ("rftt", False, False, None, 0.0),
    ("rftt_prm", True, True, None, 1.0), ("rftt_prm", False, True, None, 0.1),
    ("rftt_prm", False, False, 0.5, 0.05), ("rftt_prm", False, False, 1.0, 0.1),
    ("binary", True, True, None, 1.0), ("binary", False, True, None, 0.0), ("binary", False, False, None, 0.0),
    ("blend", True, True, 0.5, 0.8), ("blend", False, True, 0.5, 0.2), ("blend", False, False, 0.25, 0.1),
    ("blend", True, True, 1.0, 1.0),
]


@pytest.mark.parametrize("rule, correct, has_answer, prm, want", TABLE)
def test_rule_values(rule, correct, has_answer, prm, want):
    assert reward_rule(rule)(correct=correct, has_answer=has_answer, prm=prm) == pytest.approx(want, abs=1e-12)


def test_the_table_covers_every_rule_and_the_prm_needs():
    assert set(REWARD_RULES) == {r for r, *_ in TABLE} == {"rftt", "rftt_prm", "binary", "blend"}
    assert set(PRM_RULES) == {"rftt_prm", "blend"}
    need = {(r, a): needs_prm_score(r, a) for r in REWARD_RULES for a in (True, False)}
    assert need == {("rftt", True): False, ("rftt", False): False, ("binary", True): False,
                    ("binary", False): False, ("rftt_prm", True): False, ("rftt_prm", False): True,
                    ("blend", True): True, ("blend", False): True}


def test_unknown_rule_and_double_registration_are_refused():
    with pytest.raises(ValueError, match="unknown reward rule 'rfft'; choose one of rftt, rftt_prm"):
        reward_rule("rfft")
    with pytest.raises(ValueError, match="already registered"):
        register_rule("rftt")(lambda c, a, p: 0.0)
    with pytest.raises(ValueError, match="prm must be one of"):
        register_rule("x", prm="sometimes")


def test_the_grader_scores_through_the_registry():
    @register_rule("test_negative_wrong")
    def negative_wrong(correct, has_answer, prm):
        return 1.0 if correct else (-0.5 if has_answer else 0.0)

    try:
        wrong = "<output>\n\\boxed{6}\n</output>\n"
        assert score_response(wrong, "5", rule="test_negative_wrong").score == -0.5
        assert score_response(wrong.replace("6", "5"), "5", rule="test_negative_wrong").score == 1.0
    finally:
        del rules._RULES["test_negative_wrong"]
    with pytest.raises(ValueError, match="unknown reward rule"):
        score_response("x", "5", rule="test_negative_wrong")
