"""A scripted instruct model for phase-1 tests: answers prompts by request kind, deterministically.

Questions look like ``What is A + B * C?`` (gold ``A + B*C``). The scripted "model" solves them
the right way (multiply first) in next steps, and in a direct answer either right or wrong
(left to right: ``(A + B) * C``) as ``direct_answer_correct(seed)`` decides, so a search
produces known correct and wrong branches. Every call is recorded (kind, question) so tests can
check which work a (resumed) job did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from rftt_plugin.phase1.chat import ChatParams, Completion
from rftt_plugin.phase1.prompt_templates import request_kind

_Q_RE = re.compile(r"What is (\d+) \+ (\d+) \* (\d+)\?")

VERIFY_TEXT = ("The step that adds before multiplying is wrong: multiplication comes first, so the "
               "product has to be computed before the addition.")


def make_question(a: int, b: int, c: int) -> tuple[str, str]:
    return f"What is {a} + {b} * {c}?", str(a + b * c)


def _question_of(content: str) -> str:
    return content.split("Problem:\n", 1)[1].split("\n\n", 1)[0]


def _steps_block(content: str) -> str:
    if "Steps so far:\n" not in content:
        return ""
    return content.split("Steps so far:\n", 1)[1].split("\n\nYour task:", 1)[0]


class Crash(BaseException):
    """Simulates the process being killed (not an Exception, so nothing swallows it)."""


@dataclass
class ScriptedChat:
    direct_answer_correct: Callable[[int], bool] = lambda seed: seed % 2 == 0
    overrides: Mapping[str, str] = field(default_factory=dict)        # kind -> fixed reply text
    raise_on: Callable[[str, str], BaseException | None] | None = None  # (kind, question) -> exception
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def complete(self, messages: Sequence[Mapping[str, str]], params: ChatParams) -> Completion:
        content = messages[-1]["content"]
        kind = request_kind(messages)
        question = _question_of(content)
        self.calls.append((kind, question))
        if self.raise_on is not None and (exc := self.raise_on(kind, question)) is not None:
            raise exc
        if kind in self.overrides:
            return Completion(self.overrides[kind])
        a, b, c = (int(x) for x in _Q_RE.search(question).groups())
        product, right, wrong = b * c, a + b * c, (a + b) * c
        if kind == "verify":
            return Completion(VERIFY_TEXT)
        if kind == "clarify":
            return Completion(f"Restated problem: find the value of {a} + {b} * {c}.")
        if kind == "analyze":
            return Completion("Plan: multiplication comes before addition, so do the product first.")
        if kind == "subquestion":
            return Completion(f"What is {b} * {c}?")
        if kind == "next_step":
            if f"= {product}." in _steps_block(content) or f"is {product}" in _steps_block(content):
                return Completion(f"Add: {a} + {product} = {right}. The answer is \\boxed{{{right}}}.")
            return Completion(f"Multiply first: {b} * {c} = {product}.")
        if kind == "direct_answer":
            if self.direct_answer_correct(params.seed or 0):
                return Completion(f"Since {b} * {c} = {product}, the sum is {right}. The answer is \\boxed{{{right}}}.")
            return Completion(f"Left to right, {a} + {b} = {a + b} and {a + b} * {c} = {wrong}. "
                              f"The answer is \\boxed{{{wrong}}}.")
        raise AssertionError(f"unexpected request kind {kind!r}")

    def calls_for(self, question: str) -> list[str]:
        return [k for k, q in self.calls if q == question]


# A narrow config whose tree is fully known: root -> next_step "multiply" -> {next_step "add"
# (correct), direct_answer (wrong)}.
NARROW = dict(samples={"next_step": 1, "direct_answer": 1}, root_direct_answer=False, iterations=4)
