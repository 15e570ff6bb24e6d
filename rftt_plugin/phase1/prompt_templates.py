"""Phase-1 prompt texts, how they are rendered, and how the model's replies are cleaned.

Phase 1 of RFTT builds SFT data with an *instruct* model that does not know the functional
tags yet, so every action of the search is a chat prompt that asks for exactly one kind of step
(rftt-method.md 2.2). This module holds all the wording in one place; the search
(:mod:`rftt_plugin.phase1.prompted_search`) and the sample builder (:mod:`rftt_plugin.phase1.stitch`) only
call :func:`action_messages`, :func:`verify_messages` and :func:`clean_reply`.

Design choices:

* **One user message per call, no few-shot examples.** The reference sends a long few-shot
  template per action; a modern instruct model follows a precise instruction, and few-shot
  examples from one dataset leak their style and length into every step. The wording is ours.
* **The question and the steps so far are always shown**, each step labelled with what kind of
  step it is (``1. [plan] ...``), so the model can see what was already done. Labels are fixed
  words (:data:`STEP_LABELS`), and an echoed label is removed again by exact match.
* **Answers are requested as** ``\\boxed{...}`` (never ``\\box{...}``, which the reference's prompts ask
  for although its grader only reads ``\\boxed``/``\\fbox``).
* **Cleaning never strips character sets** (the reference implementation's ``str.strip("Brief analyse:")`` ate the ends
  of words). A label is removed only when the text *starts with that exact label*
  (case-insensitive, optional markdown emphasis around it, then a colon).
* **A reply is rejected rather than repaired** when repairing would guess: empty after
  cleaning, cut off by the token limit (a truncated step has no end and usually no answer), a
  reasoning block (``<think>``) that never closes, or any tag-like text (``<next_step>``,
  ``</output>``, ``<think>`` ...) left inside it, because such text would break the tagged SFT
  response (``tokens.validate`` flags unknown tags). Chat special tokens (``<|im_end|>``)
  that a server printed as text end the reply.
* **Per-kind shaping**: a sub-question keeps its first line; a next step is cut where the model
  starts a second step (``Step 3:`` / ``Next step:`` at the start of a later line); a
  cross-verification must not contain a boxed answer (it is a check, not a solution).

>>> clean_reply("analyze", "Brief analysis: numbers first, then add.").text
'numbers first, then add.'
>>> clean_reply("subquestion", "Sub-question: What is 3 * 4?\\nIt is 12.").text
'What is 3 * 4?'
>>> clean_reply("next_step", "<think>hmm</think>Step 2: 2 + 12 = 14.").text
'2 + 12 = 14.'
>>> clean_reply("next_step", "x = 3", finish_reason="length").reason
'truncated'
>>> states_answer("So the answer is \\\\boxed{14}."), states_answer("Compute 3 * 4 first.")
(True, False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from rftt_plugin.tokens import FunctionalTag, Step, looks_like_tag

__all__ = [
    "ACTIONS", "KINDS", "STEP_LABELS", "Cleaned", "action_messages", "clean_reply", "format_steps",
    "request_kind", "states_answer", "verify_messages",
]

_T = FunctionalTag
# The five prompted actions of phase 1 (verify/refine/output only appear when samples are merged).
ACTIONS: tuple[FunctionalTag, ...] = (_T.CLARIFY, _T.ANALYZE, _T.SUBQUESTION, _T.NEXT_STEP, _T.DIRECT_ANSWER)
# What clean_reply accepts: an action's tag value, or "verify" for the cross-verification reply.
KINDS: tuple[str, ...] = tuple(t.value for t in ACTIONS) + ("verify",)

# How a previous step is labelled in the "steps so far" listing (plain words, no tag syntax, so a
# model that copies the format does not produce tag-like text).
STEP_LABELS: dict[FunctionalTag, str] = {
    _T.CLARIFY: "restatement",
    _T.ANALYZE: "plan",
    _T.SUBQUESTION: "sub-question",
    _T.NEXT_STEP: "step",
    _T.DIRECT_ANSWER: "solution",
    _T.VERIFY: "check",
    _T.REFINE: "correction",
    _T.OUTPUT: "answer",
}

_INTRO = "You are working on a math problem together with a careful solver, one step at a time."

# Per action: (the task, the format rule). Wording is ours; see the module docstring.
_ACTION_TEXT: dict[FunctionalTag, tuple[str, str]] = {
    _T.CLARIFY: (
        "Restate the problem so that nothing in it is ambiguous: say what is given and what "
        "exactly has to be found. Do not solve it and do not calculate anything.",
        "Reply with the restatement only, in at most three sentences.",
    ),
    _T.ANALYZE: (
        "Give a short plan for how to continue from the steps so far: name the idea, fact or "
        "method that the next part of the solution should use. Do not calculate anything and do "
        "not give the answer.",
        "Reply with the plan only, in one or two sentences.",
    ),
    _T.SUBQUESTION: (
        "Ask the one sub-question that should be answered next to move the solution forward. It "
        "must be answerable on its own with what is known so far, and it must not repeat a "
        "sub-question that was already asked.",
        "Reply with the sub-question only, on a single line, and do not answer it.",
    ),
    _T.NEXT_STEP: (
        "Write the next single step of the solution: say in a few words what the step does, then "
        "carry it out with the full working. If the last step so far is a sub-question, this "
        "step answers it. If this step reaches the final answer, end it with the sentence "
        "\"The answer is \\boxed{...}.\" with the answer inside the box.",
        "Reply with this one step only; do not continue with further steps.",
    ),
    _T.DIRECT_ANSWER: (
        "Finish the solution: carry out every remaining step in order, starting where the steps "
        "so far stop and without repeating them.",
        "End with the sentence \"The answer is \\boxed{...}.\" with the final answer inside the box.",
    ),
}

_FIRST_STEP_NOTE = {
    # With no steps yet, "next step" and "finish" read better as "first step" and "solve".
    _T.NEXT_STEP: "There are no steps yet, so write the first step.",
    _T.DIRECT_ANSWER: "There are no steps yet, so solve the whole problem.",
    _T.ANALYZE: "There are no steps yet, so give the plan for the first part of the solution.",
    _T.SUBQUESTION: "There are no steps yet, so ask the first sub-question.",
}

_VERIFY_TASK = (
    "Two ways of continuing the same partial solution are shown below. The attempt under review "
    "reaches a wrong final answer; the other continuation is correct. Find where the attempt "
    "under review first goes wrong."
)
_VERIFY_FORMAT = (
    "Write two to four sentences as if you were re-checking your own work: name the step that is "
    "wrong, explain the mistake, and say what should be done instead. Do not mention that "
    "another continuation was shown to you, do not write the final answer, and do not use "
    "\\boxed."
)


def format_steps(steps: Sequence[Step], numbered_from: int = 1) -> str:
    """The listing of previous steps shown to the model (``(none yet)`` when empty).

    >>> print(format_steps([Step("analyze", "Multiply first."), Step("next_step", "3 * 4 = 12.")]))
    1. [plan] Multiply first.
    2. [step] 3 * 4 = 12.
    """
    if not steps:
        return "(none yet)"
    return "\n".join(f"{i}. [{STEP_LABELS[s.tag]}] {s.text.strip()}" for i, s in enumerate(steps, numbered_from))


def action_messages(action: FunctionalTag | str, question: str, steps: Sequence[Step]) -> list[dict[str, str]]:
    """Chat messages asking for one step of kind ``action`` after ``steps``."""
    action = FunctionalTag(action)
    if action not in _ACTION_TEXT:
        raise ValueError(f"{action.value!r} is not a phase-1 action; choose one of {[a.value for a in ACTIONS]}")
    task, rule = _ACTION_TEXT[action]
    parts = [_INTRO, "", f"Problem:\n{question.strip()}", "", f"Steps so far:\n{format_steps(steps)}", "",
             f"Your task: {task}"]
    if not steps and action in _FIRST_STEP_NOTE:
        parts.append(_FIRST_STEP_NOTE[action])
    parts.append(rule)
    return [{"role": "user", "content": "\n".join(parts)}]


def verify_messages(question: str, shared: Sequence[Step], wrong_tail: Sequence[Step],
                    correct_tail: Sequence[Step]) -> list[dict[str, str]]:
    """Chat messages of the cross-verification call (where does the wrong continuation fail?)."""
    start = len(shared) + 1
    parts = [
        _VERIFY_TASK, "",
        f"Problem:\n{question.strip()}", "",
        f"Steps both continuations share:\n{format_steps(shared)}", "",
        f"Attempt under review (continues after the shared steps):\n{format_steps(wrong_tail, start)}", "",
        f"Correct continuation (for your reference only):\n{format_steps(correct_tail, start)}", "",
        _VERIFY_FORMAT,
    ]
    return [{"role": "user", "content": "\n".join(parts)}]


def request_kind(messages: Sequence[dict]) -> str | None:
    """Which kind of request ``messages`` is (an action's tag value or ``"verify"``), else None.

    For logs and for scripted test models that answer by kind.

    >>> request_kind(action_messages("subquestion", "Q", []))
    'subquestion'
    """
    content = str(messages[-1].get("content", "")) if messages else ""
    if content.startswith(_VERIFY_TASK):
        return "verify"
    for action, (task, _) in _ACTION_TEXT.items():
        if f"Your task: {task}" in content:
            return action.value
    return None


# --------------------------------------------------------------------------------------------
# Cleaning replies
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cleaned:
    """A cleaned reply: ``text`` (None when rejected) and ``reason`` (``ok`` or why rejected)."""

    text: str | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.text is not None


REJECT_REASONS = {
    "error": "the call failed",
    "truncated": "the reply hit the token limit",
    "unclosed_think": "a <think> block never closes",
    "tag_in_text": "tag-like text (<name> or </name>) left in the reply",
    "boxed_in_check": "a cross-verification that states a boxed answer",
    "empty": "nothing left after cleaning",
}

# Labels a model likes to put in front of its reply, per kind. Matched as exact prefixes only.
_LABELS: dict[str, tuple[str, ...]] = {
    "clarify": ("clarified question", "clarified problem", "restated problem", "restated question",
                "restatement", "clarification"),
    "analyze": ("brief analysis", "brief analyse", "analysis", "plan"),
    "subquestion": ("next sub-question", "sub-question", "subquestion", "question"),
    "next_step": ("next step", "first step", "final step"),
    "direct_answer": ("remaining steps", "solution", "complete solution"),
    "verify": ("verification", "check", "review"),
}
_EMPH = r"(?:\*\*|__|\*|_)?"
_LABEL_RE = {
    kind: re.compile(r"^" + _EMPH + r"\s*(?:" + "|".join(re.escape(lab) for lab in sorted(labels, key=len, reverse=True))
                     + r")\s*" + _EMPH + r"\s*:\s*" + _EMPH + r"\s*", re.IGNORECASE)
    for kind, labels in _LABELS.items()
}
# "Step 3:", "**Step 3 (plan):**", "Step 3." at the very start (a model echoing our listing).
_STEP_NUMBER_RE = re.compile(r"^" + _EMPH + r"\s*step\s*\d+\s*(?:\([^)\n]{0,40}\))?\s*" + _EMPH + r"\s*[:.]\s*"
                             + _EMPH + r"\s*", re.IGNORECASE)
# "1. [plan] " / "[plan] " echoed from format_steps.
_LISTING_RE = re.compile(r"^(?:\d+\.\s*)?\[(?:" + "|".join(re.escape(v) for v in STEP_LABELS.values()) + r")\]\s*")
# Where a next_step reply starts a second step: a later line beginning with "Step N:" / "Next step:".
_SECOND_STEP_RE = re.compile(r"\n\s*" + _EMPH + r"\s*(?:step\s*\d+|next step)\b[^\n]{0,40}?[:.]", re.IGNORECASE)
_SPECIAL_TOKEN_RE = re.compile(r"<\|[^|<>\s]{1,40}\|>")
_TAG_LIKE_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9_]*)>")
_FENCE_RE = re.compile(r"^```[A-Za-z]*\n(.*)\n```$", re.DOTALL)
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_PHRASE_RE = re.compile(r"\b(?:the|my)\s+(?:final\s+)?answer\s+is\b", re.IGNORECASE)


def _strip_think(text: str) -> str | None:
    """Drop a leading reasoning block; None if it never closes."""
    stripped = text.lstrip()
    if not stripped.startswith(_THINK_OPEN):
        return text
    end = stripped.find(_THINK_CLOSE)
    if end < 0:
        return None
    return stripped[end + len(_THINK_CLOSE):]


def _strip_prefix(pattern: re.Pattern, text: str) -> str:
    m = pattern.match(text)
    return text[m.end():] if m else text


def _has_tag_like(text: str) -> bool:
    return any(looks_like_tag(m.group(2)) for m in _TAG_LIKE_RE.finditer(text))


def clean_reply(kind: str, raw: str | None, finish_reason: str = "stop") -> Cleaned:
    """Clean one reply for step kind ``kind`` (an action's tag value or ``"verify"``).

    ``finish_reason`` is the chat call's (``stop``, ``length`` or ``error``).

    >>> clean_reply("clarify", "**Restated problem:** Find 2 + 3 * 4.").text
    'Find 2 + 3 * 4.'
    >>> clean_reply("next_step", "Use <next_step> here").reason
    'tag_in_text'
    >>> clean_reply("verify", "Step 2 is wrong; it should be \\\\boxed{14}.").reason
    'boxed_in_check'
    """
    kind = FunctionalTag(kind).value if kind != "verify" else kind
    if kind not in KINDS:
        raise ValueError(f"unknown reply kind {kind!r}; choose one of {KINDS}")
    if finish_reason == "error" or raw is None:
        return Cleaned(None, "error")
    if finish_reason == "length":
        return Cleaned(None, "truncated")
    text = raw.replace("\r\n", "\n").replace("\x00", "")
    special = _SPECIAL_TOKEN_RE.search(text)
    if special:  # a chat special token printed as text ends the reply
        text = text[:special.start()]
    text = _strip_think(text)
    if text is None:
        return Cleaned(None, "unclosed_think")
    text = text.strip()
    fenced = _FENCE_RE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    # Echoed listing marks and labels, each at most once, in the order a model writes them.
    text = _strip_prefix(_LISTING_RE, text)
    text = _strip_prefix(_STEP_NUMBER_RE, text)
    text = _strip_prefix(_LABEL_RE[kind], text).strip()
    if kind == "subquestion":
        text = next((line.strip() for line in text.split("\n") if line.strip()), "")
    elif kind == "next_step":
        second = _SECOND_STEP_RE.search(text)
        if second:
            text = text[:second.start()].rstrip()
    if _has_tag_like(text):
        return Cleaned(None, "tag_in_text")
    if kind == "verify" and ("\\boxed" in text or "\\fbox" in text):
        return Cleaned(None, "boxed_in_check")
    text = text.strip()
    if not text:
        return Cleaned(None, "empty")
    return Cleaned(text, "ok")


def states_answer(text: str) -> bool:
    """Does a step state a final answer? (a complete ``\\boxed{}``/``\\fbox{}``, or "the answer is")

    This is phase 1's terminal rule for ``next_step`` (the reference checks for "Final step" /
    "So the answer is"); ``direct_answer`` is terminal whatever it says.

    >>> states_answer("Thus the final answer is 7."), states_answer("\\\\boxed{")
    (True, False)
    """
    from rftt_plugin.reward.extract import extract_answer

    return extract_answer(text).has_answer or bool(_ANSWER_PHRASE_RE.search(text))
