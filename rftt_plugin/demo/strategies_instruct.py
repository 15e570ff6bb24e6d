"""A scripted phase-1 instruct model for the strategies toy: four ways to solve a sum, some slips.

``rftt quickstart --toy strategies --phase1-data search`` builds its SFT data the way a user
builds theirs: ``rftt gen-sft``'s job (:class:`rftt_plugin.phase1.job.GenSftJob`) searches each
question with the phase-1 MCTS, asking an instruct model for one step at a time, grades the
answers, and stitches one sample per question. A tiny random model cannot play the instruct
model, so this module does, on the toy's questions ("What is a + b + c +/- d?", four operands).
It reads the request kind and the "steps so far" listing of each phase-1 prompt and answers as a
solver with the toy's four methods (:mod:`rftt_plugin.demo.synthetic`, ``STRATEGIES``):

* the method is set by the first step that is not a restatement: a plan (``analyze``) means
  left to right, a first sub-question means pairs, a first step (``next_step``) means right to
  left. Asked for the first step of a kind, it starts that kind's method;
* ``clarify`` restates nothing new ("Add all four numbers at once."): it is the opening of the
  direct strategy;
* ``next_step`` carries out the method's next computation; the one that completes the sum ends
  with ``The answer is \\boxed{u}.`` (phase 1's terminal rule). A fraction ``slip_rate`` of those
  last steps slips by 1 or 2, chosen by the call's seed, so sibling replies can disagree and the
  tree holds a wrong path that shares every step but the last with a correct one;
* ``subquestion`` after the first step asks for the method's next computation;
* ``direct_answer`` right after the restatement (or at the root) is the hurried one-shot sum: it
  adds every operand, right exactly when there is no minus. Asked to finish in the middle of a
  method, the solver writes that method's remaining computations in one step (right);
* the cross-verification names the wrong computation (``3 + 4 is not 8; ...``), or, for a
  hurried answer, that the minus was read as a plus.

It is not a model and claims nothing about one; it only lets the project's own phase-1
machinery (search, cleaning, grading, stitching) produce the toy's SFT data.

>>> m = StrategiesInstructModel(slip_rate=0.0)
>>> m.reply("subquestion", "What is 1 + 2 + 3 - 4?", "(none yet)")
'What are 1 + 2 and 3 - 4?'
>>> m.reply("next_step", "What is 1 + 2 + 3 - 4?", "1. [sub-question] What are 1 + 2 and 3 - 4?\\n2. [step] 1 + 2 = 3")
'3 - 4 = -1'
>>> m.reply("direct_answer", "What is 1 + 2 + 3 - 4?", "1. [restatement] Add all four numbers at once.")
'1 + 2 + 3 - 4 = 10. The answer is \\\\boxed{10}.'
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rftt_plugin.demo.synthetic import Problem, strategy_steps
from rftt_plugin.demo.toy_prm import chain_value
from rftt_plugin.tokens import FunctionalTag as T

__all__ = ["StrategiesInstructModel", "NotAStrategiesPrompt", "listing_steps"]

_QUESTION_RE = re.compile(r"What is (\d+ [+-] \d+ [+-] \d+ [+-] \d+)\?")
_LISTING_LINE_RE = re.compile(r"^\d+\. \[([a-z -]+)\] (.*)$")
_EQUATION_RE = re.compile(r"(-?\d+(?: [+-] \d+)+) = (-?\d+)")
# The first step that is not a restatement picks the method (phase-1 listing labels).
_METHOD_BY_LABEL = {"plan": "left_to_right", "sub-question": "pairs", "step": "right_to_left"}
_METHOD_BY_FIRST_ACTION = {"analyze": "left_to_right", "subquestion": "pairs", "next_step": "right_to_left"}
HURRIED_CHECK = "The answer written in one go adds every number, but the last one has to be subtracted."


class NotAStrategiesPrompt(ValueError):
    """The prompt is not a phase-1 request about a four-operand toy sum."""


def listing_steps(block: str) -> list[tuple[str, str]]:
    """(label, text) per line of a phase-1 "steps so far" listing; ``(none yet)`` gives [].

    >>> listing_steps("1. [plan] Add from left to right.\\n2. [step] 1 + 2 = 3")
    [('plan', 'Add from left to right.'), ('step', '1 + 2 = 3')]
    """
    out = []
    for line in block.strip().splitlines():
        m = _LISTING_LINE_RE.match(line.strip())
        if m:
            out.append((m.group(1), m.group(2).strip()))
    return out


@dataclass(frozen=True)
class StrategiesInstructModel:
    """Replies to phase-1 prompts on the strategies toy (see the module docstring)."""

    slip_rate: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.slip_rate <= 1.0:
            raise ValueError(f"slip_rate must lie in [0, 1] (got {self.slip_rate})")

    def reply(self, kind: str | None, question: str, steps_block: str, seed: int | None = None) -> str:
        m = _QUESTION_RE.search(question)
        if m is None:
            raise NotAStrategiesPrompt(f"not a four-operand toy sum: {question[:80]!r}")
        expression = m.group(1)
        p = Problem("scripted", question, expression, chain_value(expression), ())
        steps = listing_steps(steps_block)
        method = next((_METHOD_BY_LABEL[label] for label, _ in steps if label in _METHOD_BY_LABEL), None)
        if kind == "clarify":
            return strategy_steps(p, "direct")[0].text
        if kind == "analyze":  # phase 1 asks for a plan only at the root or after the restatement
            return strategy_steps(p, "left_to_right")[0].text
        if kind == "direct_answer" and method is None:
            hurried = sum(int(t) for t in expression.split()[::2])  # reads every sign as a plus
            return f"{expression} = {hurried}. The answer is \\boxed{{{hurried}}}."
        if kind not in _METHOD_BY_FIRST_ACTION and kind != "direct_answer":
            raise NotAStrategiesPrompt(f"unknown request kind {kind!r}")
        if method is None:
            method = _METHOD_BY_FIRST_ACTION[kind]
            opening = strategy_steps(p, method)[0]
            if opening.tag.value == kind:  # analyze / subquestion open their method with their own text
                return opening.text
        computations = [s.text for s in strategy_steps(p, method) if s.tag is T.NEXT_STEP]
        done = sum(1 for label, _ in steps if label == "step")
        remaining = computations[done:] or computations[-1:]
        if kind == "subquestion":
            return f"What is {remaining[0].split(' = ')[0]}?"
        if kind == "direct_answer":
            return ", ".join(remaining) + f". The answer is \\boxed{{{p.answer}}}."
        step = remaining[0]
        if len(remaining) > 1:
            return step
        lhs, result = step.rsplit(" = ", 1)
        rng = random.Random(seed)
        if seed is not None and rng.random() < self.slip_rate:
            result = str(int(result) + rng.choice((-2, -1, 1, 2)))
        return f"{lhs} = {result}. The answer is \\boxed{{{result}}}."

    def verify(self, wrong_tail_block: str) -> str:
        """The cross-verification of a wrong continuation (its listing, as the verify prompt shows it)."""
        for label, text in reversed(listing_steps(wrong_tail_block)):
            if label == "solution" and text.count(" = ") == 1 and "," not in text:  # the one-shot sum
                return HURRIED_CHECK
            for lhs, result in _EQUATION_RE.findall(text):
                if chain_value(lhs) != int(result):
                    return f"{lhs} is not {result}; that computation has to be redone."
        return "The last computation does not add up; it has to be redone one operation at a time."
