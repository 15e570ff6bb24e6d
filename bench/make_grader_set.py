"""Build bench/data/grader_labelled.jsonl: labelled (response, gold, equivalent?) pairs.

Reproducible: ``python bench/make_grader_set.py [--seed 20250101] [--out PATH]`` writes the same
file for the same seed and data. Gold answers come from the benchmark files in ../shared/data/eval
(read-only); responses are written here from templates and transformations whose equivalence is
known by construction (the label is never computed by any grader).

Gold strings given to every grader are derived here with simple rules independent of the plugin:
MATH ``answer``; GSM8K number after ``####`` without thousands separators; AIME ``answer``; AMC
``answer`` printed without ``.0``; OlympiadBench ``final_answer`` items joined by ", " with ``$``
removed.

Labelling conventions (stated so they can be disputed):
- equivalent: the same number/expression/set in another notation; thousands separators;
  ``27.0`` for 27; a trailing unit in ``\\text{}``; ``^\\circ`` on a number; ``x = v`` for ``v``;
  ``\\%`` on a number (MATH's convention: "10\\%" answers a "what percent" question with gold 10);
  reordered items of an unordered answer set (OlympiadBench multi-answer, MATH "a, b" solution sets).
- not equivalent: anything numerically different (also 1/2004! vs 1/2006!), reordered *tuples*
  (coordinates are ordered), changed interval endpoints, a hedged answer ("3 or 4", "\\pm 3" for 3),
  a missing or extra item of an answer set, and -- the RFTT protocol -- no boxed answer: a
  response without any ``\\boxed{}`` (or, in a tagged response, without one in its ``<output>``
  step), an empty box or a box that never closes has *no answer*. Those protocol rows carry
  ``protocol: true`` so the bench can report accuracy with and without them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "eval"))
DEFAULT_OUT = os.path.join(HERE, "data", "grader_labelled.jsonl")
DEFAULT_SEED = 20250101


# ----------------------------------------------------------------------------------------------
# gold answers
# ----------------------------------------------------------------------------------------------

def load_golds(data_dir: str) -> dict[str, list[dict]]:
    def rows(name):
        with open(os.path.join(data_dir, name), encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    out: dict[str, list[dict]] = {}
    out["math500"] = [{"gold": r["answer"], "raw": r["answer"], "source": "HuggingFaceH4/MATH-500"}
                      for r in rows("math500.jsonl")]
    out["gsm8k"] = [{"gold": r["answer"].rsplit("####", 1)[1].strip().replace(",", ""), "raw": r["answer"],
                     "source": "openai/gsm8k"} for r in rows("gsm8k_test.jsonl")]
    out["aime24"] = [{"gold": str(r["answer"]), "raw": r["answer"], "source": "aime24"} for r in rows("aime24.jsonl")]
    out["amc23"] = [{"gold": str(int(r["answer"])) if float(r["answer"]).is_integer() else str(r["answer"]),
                     "raw": r["answer"], "source": "amc23"} for r in rows("amc23.jsonl")]
    ob = []
    for r in rows("olympiadbench.jsonl"):
        items = []
        for entry in r["final_answer"]:
            segs = re.findall(r"\$([^$]*)\$", entry)
            glue = re.sub(r"\$([^$]*)\$", "", entry)
            if len(segs) >= 2 and not glue.replace(",", "").strip():
                items.extend(s.strip() for s in segs)
            else:
                items.append(entry.replace("$", "").strip())
        ob.append({"gold": ", ".join(items), "raw": r["final_answer"], "source": "olympiadbench",
                   "multi": bool(r["is_multiple_answer"]), "items": items, "type": r["answer_type"]})
    out["olympiadbench"] = ob
    return out


# ----------------------------------------------------------------------------------------------
# response templates
# ----------------------------------------------------------------------------------------------

FILLER_STEPS = [
    "First compute $12 \\times 3 = 36$ and subtract $4$ to get $32$.",
    "Let $x$ be the unknown; then $2x + 4 = 10$, so we check small cases.",
    "The sum of the first $n$ odd numbers is $n^2$, which gives $49$ for $n = 7$.",
    "Note that $\\frac{6}{8} = \\frac{3}{4}$ and $0.75 \\cdot 4 = 3$.",
    "By symmetry the two regions have the same area, $\\frac{1}{2}$ of the square.",
]


def tagged(answer_sentence: str, rng: random.Random, extra: str = "") -> str:
    steps = rng.sample(FILLER_STEPS, 2)
    return (f"<analyze>\nSet up the quantities and look for an invariant.\n</analyze>\n"
            f"<next_step>\n{steps[0]}\n</next_step>\n<next_step>\n{steps[1]}\n</next_step>\n{extra}"
            f"<output>\n{answer_sentence}\n</output>\n")


def plain(answer_sentence: str, rng: random.Random) -> str:
    steps = rng.sample(FILLER_STEPS, 2)
    return f"Let's think step by step. {steps[0]} {steps[1]} {answer_sentence}"


def boxed_sentence(answer: str, rng: random.Random) -> str:
    return rng.choice([f"The answer is $\\boxed{{{answer}}}$.", f"Therefore, the final answer is $\\boxed{{{answer}}}$.",
                       f"So we get \\boxed{{{answer}}}.", f"$$\\boxed{{{answer}}}$$"])


def respond(answer: str, rng: random.Random) -> str:
    sentence = boxed_sentence(answer, rng)
    return tagged(sentence, rng) if rng.random() < 0.6 else plain(sentence, rng)


# ----------------------------------------------------------------------------------------------
# transformations (known-equivalent and known-different forms)
# ----------------------------------------------------------------------------------------------

INT_RE = re.compile(r"^-?\d+$")
FRAC_RE = re.compile(r"^\\[dt]?frac\{(\d+)\}\{(\d+)\}$")


def thousands(n: int) -> str:
    return f"{n:,}"


def terminating_decimal(fr: Fraction) -> str | None:
    d = fr.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d != 1:
        return None
    s = f"{float(fr):.10f}".rstrip("0").rstrip(".")
    return s if Fraction(s) == fr else None


class Builder:
    def __init__(self, seed: int, golds: dict[str, list[dict]]) -> None:
        self.rng = random.Random(seed)
        self.golds = golds
        self.items: list[dict] = []

    def add(self, category: str, g: dict, response: str, label: bool, note: str = "", protocol: bool = False):
        self.items.append({"id": f"{len(self.items):04d}", "category": category, "data_source": g["source"],
                           "gold": g["gold"], "gold_raw": g["raw"], "response": response, "label": label,
                           "protocol": protocol, "note": note})

    def pick(self, source: str, pred, k: int) -> list[dict]:
        pool = [g for g in self.golds[source] if pred(g["gold"])]
        return self.rng.sample(pool, min(k, len(pool)))

    def any_int(self, k: int) -> list[dict]:
        out = []
        for src, n in (("gsm8k", 0.4), ("math500", 0.3), ("aime24", 0.15), ("amc23", 0.15)):
            out += self.pick(src, lambda s: bool(INT_RE.match(s)), max(1, round(k * n)))
        return out[:k]

    # -- positives ------------------------------------------------------------------------------
    def positives(self) -> None:
        r = self.rng
        for src, k in (("math500", 14), ("gsm8k", 6), ("aime24", 4), ("amc23", 4), ("olympiadbench", 12)):
            for g in self.pick(src, lambda s: len(s) < 120, k):
                self.add("exact", g, respond(g["gold"], r), True)

        for g in self.pick("gsm8k", lambda s: INT_RE.match(s) and abs(int(s)) >= 1000, 8):
            self.add("int_format", g, respond(thousands(int(g["gold"])), r), True, "thousands separator")
        for g in self.pick("amc23", lambda s: INT_RE.match(s), 5):
            self.add("int_format", g, respond(f"{int(g['gold'])}.0", r), True, "AMC float printing")
        for g in self.pick("aime24", lambda s: INT_RE.match(s) and int(s) < 100, 3):
            self.add("int_format", g, respond(f"{int(g['gold']):03d}", r), True, "AIME 3-digit form")
        for g in self.pick("math500", lambda s: s in ("10,\\!080", "58,500", "11,\\! 111,\\! 111,\\! 100"), 3):
            self.add("int_format", g, respond(g["gold"].replace(",", "").replace("\\!", "").replace(" ", ""), r),
                     True, "MATH gold with thousands separator")

        for g in self.pick("math500", lambda s: FRAC_RE.match(s) is not None, 22):
            a, b = map(int, FRAC_RE.match(g["gold"]).groups())
            fr = Fraction(a, b)
            dec = terminating_decimal(fr)
            form = r.choice([f for f in (dec, f"{a}/{b}", f"\\dfrac{{{a}}}{{{b}}}", f"\\frac{{{2 * a}}}{{{2 * b}}}",
                                         f"\\frac{a}{b}" if a < 10 and b < 10 else None) if f])
            self.add("frac_decimal", g, respond(form, r), True, "fraction in another notation")
        for g in self.pick("math500", lambda s: re.fullmatch(r"-?\d*\.\d+", s) is not None, 5):
            fr = Fraction(g["gold"])
            self.add("frac_decimal", g, respond(f"\\frac{{{fr.numerator}}}{{{fr.denominator}}}", r), True,
                     "decimal as a fraction")

        multi = [g for g in self.golds["olympiadbench"] if g["multi"] and len(g["items"]) >= 2
                 and all(len(i) < 40 for i in g["items"])]
        for g in r.sample(multi, 10):
            items = list(g["items"])
            r.shuffle(items)
            if items == g["items"]:
                items = items[::-1]
            form = r.choice([", ".join(items), "\\{" + ", ".join(items) + "\\}"])
            self.add("set_reordered", g, respond(form, r), True, "unordered answer set, reordered")
        for g in self.pick("math500", lambda s: s in ("1,-2", "3, 5, 7", "-2,1"), 3):
            items = [i.strip() for i in g["gold"].split(",")][::-1]
            self.add("set_reordered", g, respond(", ".join(items), r), True, "MATH solution set reordered")

        units = ["\\text{ dollars}", "\\text{ cm}", "\\text{ meters}", "\\text{ apples}", "\\text{ minutes}"]
        for g in self.pick("gsm8k", lambda s: INT_RE.match(s), 8):
            self.add("units_text", g, respond(g["gold"] + r.choice(units), r), True, "trailing unit")
        for g in self.pick("math500", lambda s: s.startswith("\\text{") and s.endswith("}") and "(" not in s, 5):
            word = g["gold"][len("\\text{"):-1]
            self.add("units_text", g, respond(r.choice([word, word.lower(), f"\\textbf{{{word}}}"]), r), True,
                     "\\text{} dropped")
        for g in self.pick("math500", lambda s: s.startswith("\\text{("), 3):
            letter = g["gold"][len("\\text{("):-2]
            self.add("units_text", g, respond(r.choice([f"({letter})", letter, f"\\textbf{{({letter})}}"]), r),
                     True, "multiple-choice letter")

        for g in self.pick("math500", lambda s: "\\cup" in s or re.fullmatch(r"[\[(][^,]+,[^,]+[\])]", s)
                           and "infty" in s, 7):
            form = g["gold"].replace(" ", "")
            form = form.replace("(", "\\left(", 1) if r.random() < 0.5 else form.replace(",", ", ")
            if "\\left(" in form:
                form = form.replace(")", "\\right)", 1)
            self.add("interval", g, respond(form, r), True, "interval, other spacing/\\left")

        for g in self.pick("math500", lambda s: re.fullmatch(r"\d+\^\\circ", s) is not None, 6):
            self.add("degrees", g, respond(r.choice([g["gold"].split("^")[0], g["gold"].replace("^\\circ", "^{\\circ}")]), r),
                     True, "degree sign dropped or braced")
        for g in self.any_int(4):
            self.add("degrees", g, respond(g["gold"] + "^\\circ", r), True, "degree sign added")

        for g in self.any_int(6):
            self.add("percent", g, respond(g["gold"] + r.choice(["\\%", "%"]), r), True, "percent sign (MATH convention)")
        for g in self.pick("olympiadbench", lambda s: s == "4.2", 1):
            self.add("percent", g, respond("4.2\\%", r), True, "OlympiadBench unit %")

        for g in self.any_int(7):
            var = r.choice(["x", "n", "k", "N"])
            self.add("equation", g, respond(f"{var} = {g['gold']}", r), True, "variable = value")
        for g in self.pick("math500", lambda s: s in ("x=5", "y = 2x + 3", "y = -2x"), 3):
            self.add("equation", g, respond(g["gold"].split("=")[1].strip(), r), True, "rhs of an equation gold")

        sqrt_re = re.compile(r"^(\d*)\\sqrt\{(\d+)\}$")
        for g in self.pick("math500", lambda s: sqrt_re.match(s) is not None, 8):
            a, b = sqrt_re.match(g["gold"]).groups()
            a = int(a or 1)
            form = r.choice([f"\\sqrt{{{a * a * int(b)}}}", f"{a}\\cdot\\sqrt{{{b}}}", f"\\sqrt{{{b}}} \\cdot {a}"])
            self.add("symbolic", g, respond(form, r), True, "radical rewritten")
        rewrites = {"p - q": "-q + p", "18+2\\pi": "2\\pi + 18", "2k+2": "2(k+1)", "6 - 5i": "-5i + 6",
                    "x^3+3x-6": "3x + x^3 - 6", "-13x+3": "3 - 13x", "15x - 80": "5(3x - 16)",
                    "8n^2 + 4n + 1": "1 + 4n + 8n^2", "288 \\pi": "288\\pi", "6r^2-4r-24": "2(3r^2-2r-12)",
                    "\\frac{20000}{\\pi}": "20000/\\pi", "-\\frac{\\pi}{6}": "\\frac{-\\pi}{6}",
                    "(a+5)(b+2)": "ab + 2a + 5b + 10"}
        for g in self.pick("math500", lambda s: s in rewrites, 13):
            self.add("symbolic", g, respond(rewrites[g["gold"]], r), True, "algebraic rewrite")

        for g in self.any_int(12):
            v = g["gold"]
            variants = [
                ("nested", respond(f"\\frac{{{2 * int(v)}}}{{2}}", r)),
                ("several_boxes", tagged(f"Candidates \\boxed{{{int(v) + 1}}} and \\boxed{{{int(v) + 2}}} fail; "
                                         f"the answer is \\boxed{{{v}}}.", r)),
                ("fbox", respond(v, r).replace("\\boxed", "\\fbox")),
                ("boxed_space", tagged(f"The answer is \\boxed {v}.", r)),
                ("truncated_tag", tagged(f"The answer is \\boxed{{{v}}}.", r).rsplit("</output>", 1)[0]),
                ("wrong_box_outside", tagged(f"The answer is \\boxed{{{v}}}.", r,
                                             extra=f"<direct_answer>\nmaybe \\boxed{{{int(v) + 7}}}\n</direct_answer>\n")),
            ]
            kind, text = variants[len([i for i in self.items if i["category"] == "structure"]) % len(variants)]
            self.add("structure", g, text, True, kind)

        for g in self.any_int(2):
            self.add("long_200k", g, tagged("x" * 10 + f" the answer is \\boxed{{{g['gold']}}}.", r).replace(
                "<analyze>\n", "<analyze>\n" + "We keep checking the case analysis. " * 5600, 1), True,
                "200k-character response, correct")
        for g in self.any_int(3):
            clean = respond(g["gold"], r)
            b = clean.find("\\boxed")   # null bytes everywhere before the box command
            self.add("null_bytes", g, clean[:b].replace(" ", " \x00") + clean[b:] + "\x00\x00", True,
                     "null bytes outside the box")

    # -- negatives ------------------------------------------------------------------------------
    def negatives(self) -> None:
        r = self.rng
        for g in self.any_int(22):
            v = int(g["gold"])
            wrong = r.choice([v + 1, v - 1, v * 10, v + 10, v * 2 if v else 3])
            self.add("off_by", g, respond(str(wrong), r), False, "different integer")
        for g in self.any_int(6):
            if int(g["gold"]) != 0:
                self.add("wrong_sign", g, respond(str(-int(g["gold"])), r), False, "sign flipped")
        for g in self.pick("math500", lambda s: FRAC_RE.match(s) is not None, 14):
            a, b = map(int, FRAC_RE.match(g["gold"]).groups())
            fr = Fraction(a, b)
            options = [f"\\frac{{{b}}}{{{a}}}" if a != b else None, f"\\frac{{{a + 1}}}{{{b}}}",
                       f"{float(fr):.2f}" if terminating_decimal(fr) is None else None, f"\\frac{{{a}}}{{{b + 1}}}"]
            self.add("frac_near_miss", g, respond(r.choice([o for o in options if o]), r), False, "near-miss fraction")
        for g in self.pick("math500", lambda s: re.fullmatch(r"\((-?\d+),(-?\d+)(,-?\d+)*\)", s.replace(" ", "")) is not None
                           and len(set(s.strip("()").split(","))) > 1, 4):
            items = g["gold"].strip("()").split(",")
            self.add("tuple_reordered", g, respond("(" + ",".join(items[::-1]) + ")", r), False, "ordered tuple reversed")
        for g in self.pick("math500", lambda s: not s.startswith("(-\\infty") and ("\\cup" in s or re.fullmatch(
                r"[\[(][^,]+,[^,]+[\])]", s) and "infty" not in s), 5):
            s = g["gold"]
            flipped = s.replace("(", "[", 1) if s.startswith("(") else s.replace("[", "(", 1)
            self.add("interval_endpoint", g, respond(flipped, r), False, "endpoint open/closed switched")
        multi = [g for g in self.golds["olympiadbench"] if g["multi"] and len(g["items"]) >= 2
                 and all(len(i) < 40 for i in g["items"])]
        for g in r.sample(multi, 8):
            items = list(g["items"])
            if r.random() < 0.5:
                form = ", ".join(items[:-1])
                note = "one item missing"
            else:
                form = ", ".join(items + ["1000"])
                note = "one item extra"
            self.add("set_item", g, respond(form, r), False, note)
        for g in self.any_int(3):
            if int(g["gold"]) != 0:
                self.add("hedged", g, respond(f"\\pm {g['gold']}", r), False, "\\pm answer for a single value")
        for g in self.any_int(3):
            self.add("hedged", g, respond(f"{g['gold']} \\text{{ or }} {int(g['gold']) + 1}", r), False, "two answers")
        tiny = [("\\frac{1}{2006!}", "\\frac{1}{2004!}"), ("\\frac{1}{10^{30}}", "\\frac{2}{10^{30}}"),
                ("\\frac{100000001}{100000000}", "1")]
        for gold, pred in tiny:
            self.add("tiny_numbers", {"gold": gold, "raw": gold, "source": "synthetic"}, respond(pred, r), False,
                     "differs below 6 decimals")
        for g in self.pick("math500", lambda s: s == ".0000672", 1):
            self.add("tiny_numbers", g, respond("0.0000673", r), False, "differs below 6 decimals")

        # protocol: no (complete) box where the RFTT grader looks
        for g in self.any_int(6):
            self.add("no_box", g, r.choice([tagged, lambda s, rr: plain(s, rr)])(f"The answer is {g['gold']}.", r),
                     False, "answer not boxed", protocol=True)
        for g in self.any_int(4):
            self.add("box_outside_output", g, tagged(f"So the answer is {g['gold']}.", r,
                     extra=f"<direct_answer>\nHence \\boxed{{{g['gold']}}}.\n</direct_answer>\n"), False,
                     "boxed only in direct_answer; <output> unboxed", protocol=True)
        for g in self.any_int(4):
            self.add("truncated_box", g, tagged(f"The answer is \\boxed{{{g['gold']}", r).rsplit("\n</output>", 1)[0],
                     False, "box never closed", protocol=True)
        for g in self.any_int(2):
            self.add("empty_box", g, respond("", r), False, "empty box", protocol=True)

        for g in self.any_int(5):
            v = int(g["gold"])
            self.add("last_box_wrong", g, tagged(f"First \\boxed{{{v}}}, but correcting: \\boxed{{{v + 3}}}.", r), False,
                     "correct box followed by a different last box")

        bait = ["9^{9^{9^{9}}}", "(10^{10})!", "10^{10^{10}}", "2^{2^{2^{2^{2^{2}}}}}", "100000000!"]
        for g, b in zip(self.any_int(len(bait)), bait):
            self.add("hang_bait", g, respond(b, r), False, "sympy hang bait vs a number")
        sym_golds = self.pick("math500", lambda s: s in ("p - q", "x^5 - x^4 + x^3 - x^2 + x - 1", "2k+2",
                                                          "x^3+3x-6", "15x - 80"), 4)
        for g, b in zip(sym_golds, bait):
            self.add("hang_bait", g, respond(b, r), False, "sympy hang bait vs an expression")
        # symbolic bait: no huge number, but sympy expands it for minutes (both graders time out)
        symbolic_bait = ["(x+1)^{100000}", "(x+y+z)^{300}", "\\sum_{k=1}^{100000} k^{k}"]
        for g, b in zip(self.any_int(len(symbolic_bait)), symbolic_bait):
            self.add("hang_bait", g, respond(b, r), False, "symbolic sympy hang bait")

        for g in self.any_int(2):
            self.add("long_200k", g, tagged(f"the answer is \\boxed{{{int(g['gold']) + 1}}}.", r).replace(
                "<analyze>\n", "<analyze>\n" + "We keep checking the case analysis. " * 5600, 1), False,
                "200k-character response, wrong")
        for g in self.any_int(1):
            self.add("long_200k", g, "\\boxed{" * 28_600, False, "200k characters of unclosed boxes")
        for g in self.any_int(1):
            self.add("long_200k", g, "}" * 100_000 + f"\\boxed{{{g['gold']}" + "{" * 100_000, False,
                     "200k stray braces around a box that never closes", protocol=True)
        for g in self.any_int(1):
            self.add("long_200k", g, "{" * 100_000 + f"\\boxed{{{g['gold']}}}", True,
                     "100k unclosed braces before a complete, correct box")
        for g in self.any_int(2):
            clean = respond(str(int(g["gold"]) + 2), r)
            self.add("null_bytes", g, clean.replace(" ", " \x00"), False, "null bytes, wrong answer")
        for g in self.any_int(2):
            self.add("unbalanced", g, "}}}" + respond(str(int(g["gold"]) + 5), r) + "{{{", False,
                     "stray braces, wrong answer")

    # -- families a careful human grader handles (issue 15) ------------------------------------
    def families(self) -> None:
        """Hand-labelled pairs, one table per family; each label was decided by hand (the value
        written out on paper), never by running a grader."""
        r = self.rng
        table = {
            # currency signs and words; a dropped trailing zero on money is the same amount
            "currency": [
                ("18.50", "\\$18.50", True), ("18.50", "\\$18.5", True), ("18.50", "18.5 dollars", True),
                ("18.5", "18.50\\text{ dollars}", True), ("18.5", "\\text{\\$}18.50", True),
                ("\\$32", "32", True), ("32", "\\$32.00", True), ("0.75", "\\$0.75", True),
                ("1250", "\\$1,250", True), ("7", "7 \\text{dollars}", True),
                ("18.50", "\\$18.05", False), ("18.5", "\\$185", False), ("32", "\\$3.20", False),
                ("7", "\\$7.50", False), ("\\$1,250", "\\$125", False), ("0.75", "75 dollars", False),
            ],
            # plain unit words and units in text macros after a number
            "units_words": [
                ("12", "12 apples", True), ("12", "12 \\text{ square feet}", True), ("5", "5\\,\\mbox{cm}^2", True),
                ("3", "3 hours", True), ("40", "40 \\mathrm{km}", True),
                ("12", "13 apples", False), ("5", "6\\,\\mbox{cm}^2", False), ("3", "30 minutes", False),
            ],
            # repeating decimals are exact fractions
            "repeating_decimal": [
                ("\\frac{1}{3}", "0.\\overline{3}", True), ("\\frac{1}{6}", "0.1\\overline{6}", True),
                ("\\frac{1}{7}", "0.\\overline{142857}", True), ("\\frac{14}{11}", "1.\\overline{27}", True),
                ("\\frac{1}{11}", "0.\\overline{09}", True), ("0.\\overline{3}", "\\frac{1}{3}", True),
                ("\\frac{1}{3}", "0.333\\ldots", True), ("\\frac{8}{3}", "2.\\overline{6}", True),
                ("\\frac{2}{3}", "0.\\dot{6}", True), ("1", "0.\\overline{9}", True),
                ("\\frac{3}{10}", "0.\\overline{3}", False), ("\\frac{3}{5}", "0.\\overline{6}", False),
                ("\\frac{1}{60}", "0.1\\overline{6}", False), ("\\frac{4}{37}", "0.\\overline{12}", False),
                ("\\frac{1}{3}", "0.3", False), ("0.\\overline{3}", "0.33", False),
            ],
            # a scalar factored out of a vector or matrix
            "scalar_factor": [
                ("(2,4,6)", "2(1,2,3)", True), ("\\left(\\frac{1}{2},-\\frac{1}{2}\\right)", "\\frac{1}{2}(1,-1)", True),
                ("\\left(\\frac{\\sqrt{2}}{2},\\frac{\\sqrt{2}}{2}\\right)", "\\frac{1}{\\sqrt{2}}(1,1)", True),
                ("\\begin{pmatrix}3\\\\-6\\end{pmatrix}", "3\\begin{pmatrix}1\\\\-2\\end{pmatrix}", True),
                ("\\begin{pmatrix}1/3\\\\2/3\\\\2/3\\end{pmatrix}", "\\frac{1}{3}\\begin{pmatrix}1\\\\2\\\\2\\end{pmatrix}", True),
                ("-3(1,0,2)", "(-3,0,-6)", True), ("(3,6)", "3 \\cdot (1,2)", True),
                ("(2,4,6)", "2(1,2,5)", False), ("(1,1)", "\\frac{1}{2}(1,1)", False),
                ("\\begin{pmatrix}3\\\\-6\\end{pmatrix}", "3\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
                ("(2,4)", "2(2,1)", False), ("(1,1)", "\\sqrt{2}(1,1)", False),
            ],
            # a 6-7 digit rounding of an exact value is not the value; an exact decimal is
            "exact_vs_rounded": [
                ("\\frac{1}{7}", "0.142857", False), ("\\frac{1}{3}", "0.333333", False),
                ("\\frac{2}{3}", "0.6666667", False), ("\\sqrt{2}", "1.414214", False),
                ("\\pi", "3.141593", False), ("\\frac{\\sqrt{2}}{2}", "0.7071068", False),
                ("\\frac{1}{11}", "0.0909091", False), ("\\frac{22}{7}", "3.142857", False),
                ("\\frac{1}{8}", "0.125", True), ("\\frac{5}{2}", "2.5", True), ("\\frac{1}{16}", "0.0625", True),
                ("1.75", "\\frac{7}{4}", True), ("\\frac{\\sqrt{4}}{8}", "0.25", True),
            ],
            # text macros nested around the answer
            "nested_text": [
                ("\\text{Evelyn}", "\\text{\\textbf{Evelyn}}", True), ("\\text{(C)}", "\\textbf{\\text{(C)}}", True),
                ("5", "\\text{\\textbf{5}}", True), ("\\text{even}", "\\mathrm{\\text{even}}", True),
                ("\\text{(B)}", "\\text{\\emph{(B)}}", True),
                ("\\text{Evelyn}", "\\text{\\textbf{Amy}}", False), ("\\text{(C)}", "\\textbf{\\text{(D)}}", False),
                ("5", "\\text{\\textbf{6}}", False), ("\\text{even}", "\\mathrm{\\text{odd}}", False),
            ],
            # small power towers are exact integers
            "power_tower": [
                ("2^{65536}", "2^{2^{2^{2^{2}}}}", True), ("65536", "2^{2^{2^{2}}}", True), ("262144", "4^{3^{2}}", True),
                ("64", "(2^{3})^{2}", True), ("7625597484987", "3^{3^{3}}", True), ("1024", "2^{10}", True),
                ("2^{65535}", "2^{2^{2^{2^{2}}}}", False), ("65537", "2^{2^{2^{2}}}", False),
                ("27^{3}", "3^{3^{3}}", False), ("2^{2^{2^{2}}}", "(2^{2})^{2^{2}}", False),
            ],
        }
        for category, rows in table.items():
            for gold, pred, label in rows:
                g = {"gold": gold, "raw": gold, "source": "synthetic"}
                self.add(category, g, respond(pred, r), label, "hand-labelled family case")
        # money answers to GSM8K golds: a dollar sign with thousands separators, and a wrong cent amount
        for g in self.pick("gsm8k", lambda s: INT_RE.match(s) and int(s) >= 1000, 6):
            v = int(g["gold"])
            self.add("currency", g, respond(f"\\${thousands(v)}", r), True, "dollar sign, thousands separator")
            self.add("currency", g, respond(f"\\${thousands(v)}.50", r), False, "dollars and cents: 50 cents off")

    def build(self) -> list[dict]:
        self.positives()
        self.negatives()
        self.families()
        # Rows were made category by category; a stream of responses is not sorted like that
        # (adjacent hang bait would pile up on the workers), so shuffle with the same seed.
        self.rng.shuffle(self.items)
        return self.items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--data", default=DEFAULT_DATA, help="directory with the benchmark jsonl files")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    items = Builder(args.seed, load_golds(args.data)).build()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    pos = sum(i["label"] for i in items)
    cats = sorted({i["category"] for i in items})
    print(f"wrote {len(items)} pairs ({pos} equivalent, {len(items) - pos} not) in {len(cats)} categories to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
