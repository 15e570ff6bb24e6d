"""The grader of one response and verl's ``compute_score`` entry point.

Rules (keyword ``rule``; verl passes ``reward.custom_reward_function.reward_kwargs`` as kwargs); each
is one small function in the registry of :mod:`rftt_plugin.reward.rules`:

- ``rftt`` (default; the paper's outcome reward): 1.0 correct, 0.1 answered but wrong, 0.0 no
  answer. An answer whose check gave no verdict (timed out, or the grader pool was overloaded) is
  flagged ``timed_out``; its score here is 0.1, but the ``rftt_tree`` agent loop never trains it:
  it drops the leaf and counts it (``rftt/masked/grade_timeout``).
- ``rftt_prm`` (the paper with a PRM): as ``rftt``, but a response with no answer gets
  ``sigma = 0.1 x`` the PRM's score of the path instead of 0. **A deliberate departure from the
  paper's formula read literally** (sigma = the PRM score, typically 0.5-0.95): that pays more for
  not answering (a depth or budget cut, an ``<output>`` without a box) than for a wrong boxed
  answer (0.1), an incentive to stop answering. Scaled into [0, 0.1], the PRM still ranks
  unanswered paths against each other, and no unanswered path beats an answered one.
- ``binary``: 1.0 correct, else 0.0.
- ``blend`` (the reference code's last-step reward): ``0.6 * correct + 0.4 * prm``.

For the two PRM rules the path score comes from ``prm_score`` (``extra_info["prm_score"]`` in
:func:`compute_score`: a number in [0, 1], or a list of step scores whose last is used). It must be
there: a missing or non-finite score raises :class:`MissingPRMScore` instead of silently
training on ``0.6 * correct``, unless the caller passes ``prm_default`` explicitly. Inside verl the
``rftt_tree`` agent loop scores paths with ``rftt.reward.prm`` itself.

``format_penalty`` (default 0.0 = off) is subtracted when the response does not follow the tag
grammar (``rftt_plugin.tokens.validate``). The result dict always has the same keys (verl stacks
them across a batch): ``score``, ``acc``, ``pred``, ``has_answer``, ``format_ok``, ``timed_out``.

>>> r = score_response("<next_step>\\n2+3=5\\n</next_step>\\n<output>\\n\\\\boxed{5}\\n</output>\\n", "5")
>>> r.score, r.acc, r.pred, r.format_ok
(1.0, True, '5', True)
>>> score_response("I think it is 6.", "5").score
0.0
>>> score_response("\\\\boxed{6}", "5").score
0.1
>>> score_response("\\\\boxed{6}", "5", rule="blend", prm_score=0.5).score
0.2
>>> score_response("no answer", "5", rule="rftt_prm", prm_score=[0.9, 0.3]).score
0.03
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

from rftt_plugin.reward.equivalence import (
    Verdict,
    check_equivalence,
    check_equivalence_async,
    record_event,
)
from rftt_plugin.reward.extract import Extraction, GoldAnswer, extract_answer, normalize_gold
from rftt_plugin.reward.rules import reward_rule

__all__ = ["MissingPRMScore", "RewardResult", "compute_score", "compute_score_async", "grade", "grade_async",
           "leaf_grader", "score_response", "score_response_async"]

logger = logging.getLogger("rftt_plugin.reward")

MAX_PRED_CHARS = 1000  # the pred string is logged by verl per sample; keep it bounded

# verl adds these when a reward-model router is configured; we have no use for them.
_VERL_EXTRA_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})
_OUR_KWARGS = frozenset({"rule", "format_penalty", "prm_default", "timeout_s", "max_depth"})


class MissingPRMScore(ValueError):
    """A PRM rule was asked to score a response without a usable PRM score."""


@dataclass(frozen=True)
class RewardResult:
    """Reward of one response; :meth:`to_dict` is what verl receives."""

    score: float
    acc: bool
    pred: str
    has_answer: bool
    format_ok: bool
    timed_out: bool
    # the grader failed on the answer (a worker died, the pool is unavailable); not in to_dict
    grader_error: bool = False

    @property
    def no_verdict(self) -> bool:
        """The answer was never compared (time-out, overload, grader failure): ``score`` is not a judgement."""
        return self.timed_out or self.grader_error

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("grader_error")
        return out


def _check_rule(rule: str) -> None:
    reward_rule(rule)  # ValueError naming the registered rules


def _format_ok(text: str, max_depth: int) -> bool:
    from rftt_plugin.tokens import validate

    try:
        return bool(validate(text, max_depth=max_depth, require_output=True).ok)
    except Exception:  # noqa: BLE001 - validate promises not to raise; a bug there must not stop RL
        logger.exception("tokens.validate raised; counting the format as not ok")
        return False


def _prm_value(prm_score: object, prm_default: float | None, rule: str) -> float:
    """A finite PRM score in [0, 1] (list -> its last element); else ``prm_default`` if given,
    else :class:`MissingPRMScore`."""
    value = prm_score
    if hasattr(value, "tolist"):
        value = value.tolist()  # numpy arrays and scalars from verl's non_tensor_batch
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if math.isfinite(number):
        return min(1.0, max(0.0, number))
    record_event("prm_missing")
    if prm_default is None:
        raise MissingPRMScore(f"reward rule {rule!r} needs a PRM score, got {prm_score!r:.80}: configure "
                              "rftt.reward.prm (the rftt_tree agent loop scores paths with it) or pass "
                              "extra_info['prm_score'] / prm_default")
    return float(prm_default)


def _pred_for(extraction: Extraction, gold: GoldAnswer) -> str | None:
    """The answer to compare. A gold with n > 1 items may be answered in n separate boxes."""
    answer = extraction.answer
    n = len(gold.items)
    if answer is not None and n > 1 and "," not in answer and len(extraction.boxes) >= n:
        return ", ".join(extraction.boxes[-n:])
    return answer


def _combine(extraction: Extraction, verdict: Verdict, format_ok: bool, rule: str, format_penalty: float,
             prm_score: object, prm_default: float | None) -> RewardResult:
    correct = verdict.equivalent
    has_answer = extraction.has_answer
    scorer = reward_rule(rule)
    # the PRM score is looked at only where the rule uses it (a missing one raises only there)
    prm = _prm_value(prm_score, prm_default, rule) if scorer.needs_prm(has_answer) else None
    score = scorer(correct=correct, has_answer=has_answer, prm=prm)
    if format_penalty and not format_ok:
        score -= float(format_penalty)
    pred = extraction.answer or ""
    # only a "graded" verdict says anything about the answer (equivalence.Verdict.status): work that
    # overran the bound or a grader with no free worker is flagged timed_out, a crashed one an error
    status = verdict.status
    return RewardResult(score=round(score, 10), acc=bool(correct), pred=pred[:MAX_PRED_CHARS],
                        has_answer=has_answer, format_ok=format_ok, timed_out=status in ("timeout", "overloaded"),
                        grader_error=status == "error")


def _prepare(response: str, gold: object, data_source: str | None, rule: str):
    _check_rule(rule)
    text = response.replace("\x00", "") if isinstance(response, str) else ""
    gold_answer = gold if isinstance(gold, GoldAnswer) else normalize_gold(gold, data_source)
    extraction = extract_answer(text)
    return text, gold_answer, extraction


def score_response(response: str, gold: object, *, rule: str = "rftt", format_penalty: float = 0.0,
                   prm_score: object = None, prm_default: float | None = None, data_source: str | None = None,
                   timeout_s: float | None = None, max_depth: int = 18) -> RewardResult:
    """Score one response against a gold answer (raw ground truth or :class:`GoldAnswer`). Blocking."""
    text, gold_answer, extraction = _prepare(response, gold, data_source, rule)
    verdict = check_equivalence(_pred_for(extraction, gold_answer), gold_answer, timeout_s=timeout_s)
    return _combine(extraction, verdict, _format_ok(text, max_depth), rule, format_penalty, prm_score,
                    prm_default)


async def score_response_async(response: str, gold: object, *, rule: str = "rftt",
                               format_penalty: float = 0.0, prm_score: object = None,
                               prm_default: float | None = None, data_source: str | None = None,
                               timeout_s: float | None = None, max_depth: int = 18) -> RewardResult:
    """:func:`score_response` for asyncio code: the symbolic check does not block the loop."""
    text, gold_answer, extraction = _prepare(response, gold, data_source, rule)
    verdict = await check_equivalence_async(_pred_for(extraction, gold_answer), gold_answer,
                                            timeout_s=timeout_s)
    return _combine(extraction, verdict, _format_ok(text, max_depth), rule, format_penalty, prm_score,
                    prm_default)


def grade(response: str, gold: object, *, data_source: str | None = None) -> float:
    """1.0 if the response's answer is equivalent to ``gold`` else 0.0 (for tree-search back-up).

    >>> grade("<output>\\n\\\\boxed{\\\\frac{1}{2}}\\n</output>", "\\\\frac12")
    1.0
    """
    return score_response(response, gold, rule="binary", data_source=data_source).score


async def grade_async(response: str, gold: object, *, data_source: str | None = None) -> float:
    return (await score_response_async(response, gold, rule="binary", data_source=data_source)).score


def leaf_grader(rule: str = "rftt"):
    """The ``grade(text, gold)`` coroutine function a tree search backs up: the leaf's reward under
    ``rule``, 0.0 for a question without a gold answer (nothing to compare against).

    >>> import asyncio
    >>> g = leaf_grader("rftt")
    >>> asyncio.run(g("<output>\\n\\\\boxed{4}\\n</output>", "4")), asyncio.run(g("<output>x</output>", None))
    (1.0, 0.0)
    """
    _check_rule(rule)

    async def grade_leaf(text: str, gold: object) -> float:
        if gold is None:
            return 0.0
        return (await score_response_async(text, gold, rule=rule)).score

    return grade_leaf


def _split_kwargs(kwargs: dict) -> dict:
    unknown = set(kwargs) - _OUR_KWARGS - _VERL_EXTRA_KWARGS
    if unknown:
        raise TypeError(f"compute_score got unexpected keyword(s) {sorted(unknown)}; "
                        f"reward_kwargs may set {sorted(_OUR_KWARGS)}")
    return {k: v for k, v in kwargs.items() if k in _OUR_KWARGS}


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """verl custom reward function (``reward.custom_reward_function.path=pkg://rftt_plugin.reward``).

    Keyword options (``+reward.custom_reward_function.reward_kwargs.<name>=...``): ``rule``,
    ``format_penalty``, ``prm_default``, ``timeout_s``, ``max_depth``.

    >>> compute_score("openai/gsm8k", "<output>\\n\\\\boxed{1,200}\\n</output>", "#### 1200")["acc"]
    True
    """
    options = _split_kwargs(kwargs)
    prm = extra_info.get("prm_score") if isinstance(extra_info, dict) else None
    return score_response(solution_str, ground_truth, data_source=data_source, prm_score=prm,
                          **options).to_dict()


async def compute_score_async(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """Async twin of :func:`compute_score` (select it with ``custom_reward_function.name``)."""
    options = _split_kwargs(kwargs)
    prm = extra_info.get("prm_score") if isinstance(extra_info, dict) else None
    result = await score_response_async(solution_str, ground_truth, data_source=data_source, prm_score=prm,
                                        **options)
    return result.to_dict()
