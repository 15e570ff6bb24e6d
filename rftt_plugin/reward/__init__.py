"""RFTT rewards: answer extraction, math equivalence in a killable worker pool, reward rules, PRM.

verl entry point: ``reward.custom_reward_function.path=pkg://rftt_plugin.reward`` with
``name=compute_score`` (or ``compute_score_async``). Importing this package is cheap: math-verify,
sympy and torch load only in grader worker processes or when a PRM scorer is built.

>>> from rftt_plugin.reward import compute_score
>>> compute_score("math", "<output>\\n\\\\boxed{4}\\n</output>", "4")["score"]
1.0
"""

from rftt_plugin.reward.equivalence import (
    GraderConfig,
    Verdict,
    check_equivalence,
    check_equivalence_async,
    configure,
    grader_health,
    grader_stats,
    is_equivalent,
    reset_grader_stats,
)
from rftt_plugin.reward.extract import Extraction, GoldAnswer, extract_answer, normalize_gold
from rftt_plugin.reward.rules import REWARD_RULES, reward_rule
from rftt_plugin.reward.score import (
    RewardResult,
    compute_score,
    compute_score_async,
    grade,
    grade_async,
    score_response,
    score_response_async,
)

__all__ = [
    "REWARD_RULES", "Extraction", "GoldAnswer", "GraderConfig", "RewardResult", "Verdict", "check_equivalence",
    "check_equivalence_async", "compute_score", "compute_score_async", "configure", "extract_answer",
    "grade", "grade_async", "grader_health", "grader_stats", "is_equivalent", "normalize_gold",
    "reset_grader_stats", "reward_rule", "score_response", "score_response_async",
]
