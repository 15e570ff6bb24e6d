"""No step of the grader stalls on a long answer or gold (issue 27).

Before: a clean-up regular expression backtracked exponentially on runs of digits (24 digits:
2.6 s, doubling per digit) in the caller's thread, outside the time bound. Now every expression
is linear or runs on bounded input, and a pair longer than ``inline_max_chars`` is prepared in a
worker, under the bound. The checks below are hang detectors, not speed targets: a linear pass
over 100,000 characters takes milliseconds, an exponential or quadratic one would not end within
the generous subprocess limit on any machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from rftt_plugin.reward import equivalence as eq
from rftt_plugin.reward.extract import GoldAnswer

ROOMY = 60.0

# Inputs shaped to trip backtracking: long digit runs with a bad tail, digits and letters,
# unclosed groups, repeated separators, long words.
PROBE = textwrap.dedent("""
    import json
    from rftt_plugin.reward.answer_match import clean_answer, fast_verdict, prepare
    from rftt_plugin.reward.extract import extract_answer, normalize_gold
    from rftt_plugin.reward.quantity import split_quantity
    n = __N__
    shapes = ["1" * n, "1" * n + "x", "(" + "1" * n, "2" + "1" * n + "(1,2", "1," * n, "1, " * n + "x",
              "a" * n, "5 " + "word " * (n // 5), "0." + "3" * n + "\\\\ldots", "\\\\text{" + "1" * n,
              "1" * n + "_2", "\\\\{" + "1," * (n // 2), "\\\\frac{" * (n // 6), "x^" * (n // 2), "5" + "\\\\," * n,
              "5" + " " * n + "x", "2" + " \\\\cdot" * (n // 6) + "(1,2", "x" + "\\\\text{ cm}" * (n // 9),
              "5" + "\\\\,\\\\quad " * (n // 8) + "\\\\text{cm}", "^ " * (n // 2) + "2", "1" * n + "\\\\%"]
    done = 0
    for s in shapes:
        clean_answer(s); split_quantity(s); prepare(s, s[::-1]); prepare(s, "5"); prepare("5", s)
        extract_answer("\\\\boxed{" + s + "}"); normalize_gold(s)
        done += 1
    print(json.dumps({"done": done, "of": len(shapes)}))
""")


@pytest.mark.slow
def test_no_pure_step_is_superlinear_on_100k_character_inputs():
    proc = subprocess.run([sys.executable, "-c", PROBE.replace("__N__", "100_000")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["done"] == out["of"]


def _gold(text: str) -> GoldAnswer:
    return GoldAnswer((text,), "latex")


@pytest.mark.parametrize("digits", [30, 2_000, 20_000])
def test_long_numbers_get_exact_verdicts(digits):
    number = "".join(str((7 * i + 3) % 10) for i in range(digits)).lstrip("0")
    other = number[:-1] + str((int(number[-1]) + 1) % 10)
    same = eq.check_equivalence(number, _gold(number + ".000"), timeout_s=ROOMY)
    wrong = eq.check_equivalence(other, _gold(number), timeout_s=ROOMY)
    assert same.equivalent and same.graded, same
    assert not wrong.equivalent and wrong.graded, wrong
    if digits > eq.get_config().inline_max_chars:
        assert eq.grader_stats()["symbolic_calls"] >= 1   # went to a worker, under the bound


def test_an_answer_far_longer_than_its_gold_is_refused_at_once():
    verdict = eq.check_equivalence("1" * 100_000, _gold("5"))
    assert verdict.method == "too_long" and not verdict.equivalent
