"""The reward rules: one small pure function each, in a registry keyed by the rule's name.

A rule maps what the grader found out about one response to its score: whether the answer is
correct, whether there is an answer at all, and (for the PRM rules) the PRM's path score in
[0, 1]. The grader (:mod:`rftt_plugin.reward.score`) and the ``rftt_tree`` agent loop (cut leaves,
which have no answer) both score through :func:`reward_rule`, so a rule is written once. Each rule
says when it needs the PRM (``prm="always"``, ``"unanswered"``, or never), so callers ask the PRM
only where its value is used (:func:`needs_prm_score`).

A new rule is one decorated function (the pattern of verl's ``register_adv_est`` and of TRL's
reward functions)::

    @register_rule("strict")
    def strict(correct, has_answer, prm):
        '''1.0 correct, -0.1 answered but wrong, 0.0 no answer.'''
        ...

>>> sorted(REWARD_RULES) == sorted(("rftt", "rftt_prm", "binary", "blend"))
True
>>> reward_rule("rftt")(correct=False, has_answer=True, prm=None)
0.1
>>> needs_prm_score("rftt_prm", has_answer=True), needs_prm_score("rftt_prm", has_answer=False)
(False, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["ANSWERED_WRONG", "BLEND_OUTCOME", "BLEND_PRM", "CORRECT", "NO_ANSWER", "NO_ANSWER_PRM_SCALE",
           "PRM_RULES", "PRM_USES", "REWARD_RULES", "RewardRule", "needs_prm_score", "register_rule",
           "reward_rule"]

CORRECT, ANSWERED_WRONG, NO_ANSWER = 1.0, 0.1, 0.0   # the paper's outcome reward
BLEND_OUTCOME, BLEND_PRM = 0.6, 0.4                 # reference code: 0.6 * c + 0.4 * p_n
NO_ANSWER_PRM_SCALE = ANSWERED_WRONG                # rftt_prm: sigma = 0.1 x PRM, never above a wrong answer

PRM_USES = ("always", "unanswered")  # when a rule reads the PRM's path score

RuleFn = Callable[..., float]  # (correct: bool, has_answer: bool, prm: float | None) -> score


@dataclass(frozen=True)
class RewardRule:
    """A registered rule: ``fn(correct, has_answer, prm)`` and when it needs ``prm``."""

    name: str
    fn: RuleFn
    prm: Optional[str] = None

    def __call__(self, *, correct: bool, has_answer: bool, prm: float | None = None) -> float:
        return self.fn(correct, has_answer, prm)

    def needs_prm(self, has_answer: bool) -> bool:
        return self.prm == "always" or (self.prm == "unanswered" and not has_answer)


_RULES: dict[str, RewardRule] = {}


def register_rule(name: str, *, prm: str | None = None) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as reward rule ``name``; ``prm`` says when it reads the PRM score."""
    if prm is not None and prm not in PRM_USES:
        raise ValueError(f"prm must be one of {PRM_USES} or None, got {prm!r}")

    def add(fn: RuleFn) -> RuleFn:
        if name in _RULES:
            raise ValueError(f"reward rule {name!r} is already registered")
        _RULES[name] = RewardRule(name, fn, prm)
        return fn

    return add


def reward_rule(name: str) -> RewardRule:
    """The registered rule ``name`` (ValueError naming the choices otherwise).

    >>> reward_rule("bleand")
    Traceback (most recent call last):
    ...
    ValueError: unknown reward rule 'bleand'; choose one of rftt, rftt_prm, binary, blend
    """
    try:
        return _RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown reward rule {name!r}; choose one of {', '.join(_RULES)}") from None


def needs_prm_score(name: str, has_answer: bool) -> bool:
    """Whether rule ``name`` reads the PRM's path score for a response with(out) an answer."""
    return reward_rule(name).needs_prm(has_answer)


@register_rule("rftt")
def rftt(correct: bool, has_answer: bool, prm: float | None) -> float:
    """The paper's outcome reward: 1.0 correct, 0.1 answered but wrong, 0.0 no answer.

    >>> rftt(True, True, None), rftt(False, True, None), rftt(False, False, None)
    (1.0, 0.1, 0.0)
    """
    return CORRECT if correct else (ANSWERED_WRONG if has_answer else NO_ANSWER)


@register_rule("rftt_prm", prm="unanswered")
def rftt_prm(correct: bool, has_answer: bool, prm: float | None) -> float:
    """As ``rftt``, but no answer gets sigma = 0.1 x the PRM's path score instead of 0 (scaled so
    that no unanswered path beats a wrong answer; see :mod:`rftt_plugin.reward.score`).

    >>> rftt_prm(False, False, 0.3), rftt_prm(False, True, None), rftt_prm(False, False, 1.0)
    (0.03, 0.1, 0.1)
    """
    if correct or has_answer:
        return rftt(correct, has_answer, None)
    return NO_ANSWER_PRM_SCALE * _need(prm, "rftt_prm")


@register_rule("binary")
def binary(correct: bool, has_answer: bool, prm: float | None) -> float:
    """1.0 correct, else 0.0.

    >>> binary(True, True, None), binary(False, True, None)
    (1.0, 0.0)
    """
    return 1.0 if correct else 0.0


@register_rule("blend", prm="always")
def blend(correct: bool, has_answer: bool, prm: float | None) -> float:
    """The reference code's last-step reward: 0.6 x correct + 0.4 x the PRM's path score.

    >>> blend(True, True, 0.5), blend(False, False, 0.5)
    (0.8, 0.2)
    """
    return BLEND_OUTCOME * float(correct) + BLEND_PRM * _need(prm, "blend")


def _need(prm: float | None, rule: str) -> float:
    if prm is None:  # callers resolve the score first (score.py raises MissingPRMScore with the fix)
        raise ValueError(f"reward rule {rule!r} needs a PRM score")
    return prm


REWARD_RULES: tuple[str, ...] = tuple(_RULES)
PRM_RULES: tuple[str, ...] = tuple(name for name, rule in _RULES.items() if rule.prm is not None)
