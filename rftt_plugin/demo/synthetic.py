"""A synthetic task a tiny model can learn on CPU: multi-step integer arithmetic in functional tags.

Questions are generated from a seed (``make_problems``); each has an exact integer answer and a
reference solution written as RFTT steps (``tagged_solution``): an ``<analyze>`` step that names
the order of operations, one ``<next_step>`` per operation, and an ``<output>`` with
``\\boxed{answer}``. With ``self_correct=True`` a solution first makes an arithmetic slip, then
``<verify>`` spots it and ``<refine>`` redoes the step -- the shape of RFTT's phase-1 samples.

Used by the CPU quickstart and by tests that need a model whose rewards vary (a random model
never boxes a right answer). Train and held-out problems never overlap (``split_problems``).

>>> p = make_problems(1, seed=0)[0]
>>> p.answer == eval(p.expression)
True
>>> from rftt_plugin.tokens import validate
>>> validate(tagged_solution(p)).ok and validate(tagged_solution(p, self_correct=True)).ok
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rftt_plugin.tokens import FunctionalTag as T
from rftt_plugin.tokens import Step, render

DATA_SOURCE = "rftt_synthetic_arith"


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    expression: str
    answer: int
    ops: tuple[tuple[str, int, str, int, int], ...]  # (left text, left value, op, right value, result)


def _problem(rng: random.Random, index: int, max_operand: int) -> Problem:
    a, b, c = (rng.randint(1, max_operand) for _ in range(3))
    form = rng.choice(("a+b*c", "a*b+c", "a+b+c", "a*b-c"))
    if form == "a+b*c":
        bc = b * c
        ops = ((f"{b} * {c}", b, "*", c, bc), (f"{a} + {bc}", a, "+", bc, a + bc))
        expr, ans = f"{a} + {b} * {c}", a + bc
    elif form == "a*b+c":
        ab = a * b
        ops = ((f"{a} * {b}", a, "*", b, ab), (f"{ab} + {c}", ab, "+", c, ab + c))
        expr, ans = f"{a} * {b} + {c}", ab + c
    elif form == "a+b+c":
        ab = a + b
        ops = ((f"{a} + {b}", a, "+", b, ab), (f"{ab} + {c}", ab, "+", c, ab + c))
        expr, ans = f"{a} + {b} + {c}", ab + c
    else:
        ab = a * b
        ops = ((f"{a} * {b}", a, "*", b, ab), (f"{ab} - {c}", ab, "-", c, ab - c))
        expr, ans = f"{a} * {b} - {c}", ab - c
    return Problem(f"arith-{index}", f"What is {expr}?", expr, ans, ops)


def make_problems(n: int, seed: int = 0, max_operand: int = 9) -> list[Problem]:
    """``n`` distinct problems (by expression), deterministic for a seed."""
    rng = random.Random(seed)
    out: list[Problem] = []
    seen: set[str] = set()
    while len(out) < n:
        p = _problem(rng, len(out), max_operand)
        if p.expression not in seen:
            seen.add(p.expression)
            out.append(p)
    return out


def split_problems(n_train: int, n_test: int, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    problems = make_problems(n_train + n_test, seed=seed)
    return problems[:n_train], problems[n_train:]


def tagged_solution(p: Problem, self_correct: bool = False, rng: random.Random | None = None) -> str:
    plan = "Multiply first, then add or subtract." if "*" in p.expression else "Add from left to right."
    steps = [Step(T.ANALYZE, plan)]
    for i, (text, _l, _op, _r, result) in enumerate(p.ops):
        if self_correct and i == len(p.ops) - 1:
            slip = result + (rng or random.Random(p.id)).choice((-2, -1, 1, 2))
            steps.append(Step(T.NEXT_STEP, f"{text} = {slip}"))
            steps.append(Step(T.VERIFY, f"Check: {text} is not {slip}."))
            steps.append(Step(T.REFINE, f"{text} = {result}"))
        else:
            steps.append(Step(T.NEXT_STEP, f"{text} = {result}"))
    steps.append(Step(T.OUTPUT, f"The answer is \\boxed{{{p.answer}}}."))
    return render(steps)


def rl_row(p: Problem, index: int, split: str) -> dict:
    """A verl RL parquet row (same schema as ``rftt data rl``)."""
    return {"prompt": [{"role": "user", "content": p.question}], "data_source": DATA_SOURCE, "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(p.answer)},
            "extra_info": {"index": index, "split": split, "source": p.id}}


def sft_row(p: Problem, self_correct: bool = False) -> dict:
    """A verl SFT parquet row (``messages``: the question, then the tagged solution)."""
    return {"messages": [{"role": "user", "content": p.question},
                         {"role": "assistant", "content": tagged_solution(p, self_correct=self_correct)}]}


# --------------------------------------------------------------------------------------------
# The quickstart toy: sums of small digits, with a phase-1 shortcut RL has to unlearn
# --------------------------------------------------------------------------------------------
#
# Questions "What is a + b + c + d?" and "What is a + b + c - d?" (digits 1..5, four operands;
# 1,250 questions). Step by step (<next_step> a + b = s, s + c = t, t +/- d = u) each step adds
# one digit 1..5 to a number below 16: about 130 small facts that a 128-wide 2-layer model
# learns in a few hundred SFT steps (measured: 89% of held-out step paths right after 600
# steps). A <direct_answer> that writes a + b + c + d = u in one go is a four-operand sum the
# tiny model gets right far less often on held-out questions.
#
# (Toys tried first, on the same model and steps, learnt too slowly for the CPU budget: sums
# mod 10, mod 5, mod 4 and mod 3 and pointer chasing all stay at chance for 600-2000 steps before
# a sudden jump, at a step that varies with the seed; three-digit sums 1..9 learn the step
# path gradually but their direct answer is as good as the step path, so RL has nothing to
# fix. See docs/quickstart-results.md.)
#
# Phase-1 data mirrors `rftt gen-sft` (rftt_plugin.phase1.stitch) on trees a prompted instruct model
# would grow: under <analyze> its search tries a <direct_answer> (in `direct_fraction` of the
# trees: the model's tag preference) and <next_step>s. The instruct model's direct answer is
# right on all-plus sums and the sample rule keeps the best *correct* path with ties broken by
# *fewer steps*, so those trees give the two-step "analyze -> direct_answer" sample; trees
# without a direct answer, and every minus question, give the step-by-step path, a
# `self_correct_fraction` of them merged with a wrong step (<verify>/<refine>), as gen-sft merges
# the worst wrong path. Every sample is correct; the error mode is what the tiny model makes of
# them: it learns "all-plus -> answer directly" but cannot add four digits at once. Phase 2's
# verifiable reward (1 correct / 0.1 answered) is what tells it the step path pays.

SUMS_DATA_SOURCE = DATA_SOURCE  # graded like any synthetic arithmetic row


def sum_problems(seed: int = 0, max_digit: int = 5, operands: int = 4) -> list[Problem]:
    """Every a + b (+ ...) + z and a + b (+ ...) - z question (digits 1..max_digit), in a seeded order."""
    import itertools

    if max_digit < 1 or operands < 2:
        raise ValueError(f"sum_problems needs max_digit >= 1 and operands >= 2 (got {max_digit}, {operands})")
    out: list[Problem] = []
    for digits in itertools.product(range(1, max_digit + 1), repeat=operands):
        for op in ("+", "-"):
            ops, total = [], digits[0]
            for i, d in enumerate(digits[1:]):
                sign = op if i == operands - 2 else "+"
                result = total + d if sign == "+" else total - d
                ops.append((f"{total} {sign} {d}", total, sign, d, result))
                total = result
            expr = " + ".join(map(str, digits[:-1])) + f" {op} {digits[-1]}"
            out.append(Problem("", f"What is {expr}?", expr, total, tuple(ops)))
    random.Random(seed).shuffle(out)
    return [Problem(f"sum-{i}", p.question, p.expression, p.answer, p.ops) for i, p in enumerate(out)]


def split_sum_problems(n_train: int, n_test: int, seed: int = 0, max_digit: int = 5,
                       operands: int = 4) -> tuple[list[Problem], list[Problem]]:
    """Disjoint train / held-out questions (by expression)."""
    problems = sum_problems(seed, max_digit, operands)
    if n_train + n_test > len(problems):
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {len(problems)} distinct sum questions")
    return problems[:n_train], problems[n_train:n_train + n_test]


def direct_solution(p: Problem) -> str:
    """The shortest correct path: <analyze> the plan, <direct_answer> the whole sum, <output>."""
    return render([Step(T.ANALYZE, "Add from left to right."), Step(T.DIRECT_ANSWER, f"{p.expression} = {p.answer}"),
                   Step(T.OUTPUT, f"The answer is \\boxed{{{p.answer}}}.")])


def phase1_sample(p: Problem, rng: random.Random, direct_fraction: float = 0.7,
                  self_correct_fraction: float = 0.1) -> tuple[str, str]:
    """(kind, tagged response) that gen-sft's rules would keep for ``p`` (see the section note).

    kind: ``direct`` (shortest correct path), ``merged`` (wrong step, <verify>, <refine>) or ``plain``.
    """
    if not 0.0 <= direct_fraction <= 1.0 or not 0.0 <= self_correct_fraction <= 1.0:
        raise ValueError(f"fractions must lie in [0, 1] (direct {direct_fraction}, self-correct {self_correct_fraction})")
    reached_direct = rng.random() < direct_fraction
    merged = rng.random() < self_correct_fraction
    if reached_direct and "-" not in p.expression:
        return "direct", direct_solution(p)
    if merged:
        return "merged", tagged_solution(p, self_correct=True, rng=rng)
    return "plain", tagged_solution(p)


# --------------------------------------------------------------------------------------------
# The strategies toy: the same sums, four ways to solve them, one per opening tag
# --------------------------------------------------------------------------------------------
#
# Each opening tag starts its own computation, so a tree whose root children are the four tags
# holds four solutions that use different arithmetic facts:
#
#   <analyze>      left to right:   a + b = s, s + c = t, t +/- d = u
#   <next_step>    right to left:   c +/- d = v, b + v = w, a + w = u
#   <subquestion>  pairs:           a + b = s, c +/- d = v, s + v = u
#   <clarify>      all at once:     <direct_answer> a + b + c +/- d = u
#
# The direct answer is a four-operand sum in one go, which the tiny model gets right only on some
# questions; the three step strategies use small facts but different ones, so their slips fall on
# different questions. A search that opens every tag can outvote one strategy's slip; greedy
# decoding follows whichever tag the policy prefers.

STRATEGIES = ("left_to_right", "right_to_left", "pairs", "direct")
STRATEGY_OPENING = {"left_to_right": T.ANALYZE, "right_to_left": T.NEXT_STEP, "pairs": T.SUBQUESTION,
                    "direct": T.CLARIFY}


def _signed_operands(p: Problem) -> list[int]:
    tokens = p.expression.split()
    values = [int(tokens[0])]
    for sign, number in zip(tokens[1::2], tokens[2::2]):
        values.append(int(number) if sign == "+" else -int(number))
    return values


def _plus(x: int, y: int) -> str:
    """``x + y`` written with the sign of ``y`` (``5 - 2``, not ``5 + -2``)."""
    return f"{x} + {y}" if y >= 0 else f"{x} - {-y}"


def strategy_steps(p: Problem, strategy: str) -> list[Step]:
    """The steps of ``strategy`` for ``p`` (no ``<output>``).

    >>> p = Problem("x", "What is 1 + 2 + 3 - 4?", "1 + 2 + 3 - 4", 2, ())
    >>> [s.text for s in strategy_steps(p, "right_to_left")]
    ['3 - 4 = -1', '2 - 1 = 1', '1 + 1 = 2']
    >>> [s.text for s in strategy_steps(p, "pairs")][1:]
    ['1 + 2 = 3', '3 - 4 = -1', '3 - 1 = 2']
    """
    v = _signed_operands(p)
    if len(v) != 4:
        raise ValueError(f"the strategies toy needs four operands, got {p.expression!r}")
    a, b, c, d = v
    if strategy == "left_to_right":
        s, t = a + b, a + b + c
        return [Step(T.ANALYZE, "Add from left to right."), Step(T.NEXT_STEP, f"{_plus(a, b)} = {s}"),
                Step(T.NEXT_STEP, f"{_plus(s, c)} = {t}"), Step(T.NEXT_STEP, f"{_plus(t, d)} = {t + d}")]
    if strategy == "right_to_left":
        w = c + d
        return [Step(T.NEXT_STEP, f"{_plus(c, d)} = {w}"), Step(T.NEXT_STEP, f"{_plus(b, w)} = {b + w}"),
                Step(T.NEXT_STEP, f"{_plus(a, b + w)} = {a + b + w}")]
    if strategy == "pairs":
        s, w = a + b, c + d
        return [Step(T.SUBQUESTION, f"What are {_plus(a, b)} and {_plus(c, d)}?"),
                Step(T.NEXT_STEP, f"{_plus(a, b)} = {s}"), Step(T.NEXT_STEP, f"{_plus(c, d)} = {w}"),
                Step(T.NEXT_STEP, f"{_plus(s, w)} = {s + w}")]
    if strategy == "direct":
        return [Step(T.CLARIFY, "Add all four numbers at once."), Step(T.DIRECT_ANSWER, f"{p.expression} = {p.answer}")]
    raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")


def strategy_solution(p: Problem, strategy: str, self_correct: bool = False, rng: random.Random | None = None) -> str:
    """A whole tagged response; with ``self_correct`` the last step first slips, then <verify>/<refine>.

    >>> from rftt_plugin.tokens import validate
    >>> q = sum_problems()[0]
    >>> all(validate(strategy_solution(q, s, sc)).ok for s in STRATEGIES for sc in (False, True))
    True
    """
    steps = strategy_steps(p, strategy)
    if self_correct and strategy != "direct":
        last = steps[-1]
        lhs, result = last.text.rsplit(" = ", 1)
        slip = int(result) + (rng or random.Random(p.id)).choice((-2, -1, 1, 2))
        steps[-1:] = [Step(T.NEXT_STEP, f"{lhs} = {slip}"), Step(T.VERIFY, f"Check: {lhs} is not {slip}."),
                      Step(T.REFINE, f"{lhs} = {result}")]
    steps.append(Step(T.OUTPUT, f"The answer is \\boxed{{{p.answer}}}."))
    return render(steps)


def strategy_sample(p: Problem, rng: random.Random, self_correct_fraction: float = 0.1) -> tuple[str, str]:
    """(strategy, tagged response) for the strategies toy's SFT data.

    A strategy is drawn uniformly among those whose answer a phase-1 instruct model gets right:
    all four on all-plus questions, the three step strategies on minus questions (the hurried
    direct answer adds the last number). A ``self_correct_fraction`` of step samples slip, then
    verify and refine.
    """
    allowed = [s for s in STRATEGIES if s != "direct" or "-" not in p.expression]
    strategy = rng.choice(allowed)
    merged = strategy != "direct" and rng.random() < self_correct_fraction
    return (f"{strategy}+merged" if merged else strategy), strategy_solution(p, strategy, merged, rng)
