"""The strategies toy's SFT data from the project's own phase-1 machinery (issue 24 item 2).

The scripted instruct model is checked against Python's arithmetic and a regex parser of its
replies; the ``opening`` pick rule on hand-made paths; the quickstart's data stage end to end
(gen-sft's job: search, grading, stitching) on the smoke size.
"""

import asyncio
import io
import json
import random
import re

import pytest

from rftt_plugin.demo.strategies_instruct import (HURRIED_CHECK, NotAStrategiesPrompt, StrategiesInstructModel,
                                                  listing_steps)
from rftt_plugin.demo.synthetic import sum_problems
from rftt_plugin.demo.toy_instruct import ScriptedChat
from rftt_plugin.phase1.chat import ChatParams
from rftt_plugin.phase1.prompt_templates import action_messages, format_steps, verify_messages
from rftt_plugin.phase1.stitch import PathInfo, SampleConfig, choose
from rftt_plugin.tokens import FunctionalTag as T, Step, parse, validate

_FACT = re.compile(r"(-?\d+) ([+-]) (\d+) = (-?\d+)")
_BOX = re.compile(r"\\boxed\{(-?\d+)\}")


def _ask(model, kind, question, steps, seed=None):
    """One phase-1 request as the search sends it (real prompt text), answered by the model."""
    chat = ScriptedChat(model)
    reply = asyncio.run(chat.complete(action_messages(kind, question, steps), ChatParams(seed=seed)))
    assert reply.finish_reason == "stop", reply.error
    return reply.text


def _walk(model, question, first_kind, seed=0):
    """Follow one method: the first request of ``first_kind``, then next steps until one states an answer."""
    steps = [Step(T(first_kind), _ask(model, first_kind, question, [], seed))]
    while _BOX.search(steps[-1].text) is None:
        assert len(steps) < 6, steps
        steps.append(Step(T.NEXT_STEP, _ask(model, "next_step", question, steps, seed)))
    return steps


def _true(x, sign, y):
    return x + y if sign == "+" else x - y


@pytest.mark.parametrize("first, facts_expected", [("analyze", 3), ("next_step", 3), ("subquestion", 3)])
def test_every_method_is_true_arithmetic_that_ends_in_the_answer(first, facts_expected):
    model = StrategiesInstructModel(slip_rate=0.0)
    for p in sum_problems(seed=5)[:150]:
        steps = _walk(model, p.question, first)
        facts = [tuple(int(v) if v.lstrip("-").isdigit() else v for v in m.groups())
                 for s in steps for m in _FACT.finditer(s.text)]
        assert len(facts) == facts_expected, steps
        for x, sign, y, z in facts:
            assert z == _true(x, sign, y), (p.expression, steps)
        assert int(_BOX.search(steps[-1].text).group(1)) == eval(p.expression) == p.answer


def test_the_three_methods_compute_different_partial_sums():
    model = StrategiesInstructModel(slip_rate=0.0)
    p = next(q for q in sum_problems(seed=5) if q.expression == "1 + 2 + 3 - 4")
    first_computation = {k: next(s.text for s in _walk(model, p.question, k) if s.tag is T.NEXT_STEP)
                         for k in ("analyze", "next_step")}
    assert first_computation == {"analyze": "1 + 2 = 3", "next_step": "3 - 4 = -1"}
    pairs = _walk(model, p.question, "subquestion")
    assert [s.text for s in pairs] == ["What are 1 + 2 and 3 - 4?", "1 + 2 = 3", "3 - 4 = -1",
                                       "3 - 1 = 2. The answer is \\boxed{2}."]


def test_the_hurried_direct_answer_is_right_exactly_without_a_minus():
    model = StrategiesInstructModel()
    for p in sum_problems(seed=1)[:200]:
        clarify = Step(T.CLARIFY, _ask(model, "clarify", p.question, []))
        answer = int(_BOX.search(_ask(model, "direct_answer", p.question, [clarify])).group(1))
        hurried = sum(int(t) for t in re.findall(r"\d+", p.expression))
        assert answer == hurried
        assert (answer == p.answer) == ("-" not in p.expression)  # a minus: off by twice the last number


def test_asked_to_finish_midway_the_solver_writes_the_remaining_computations():
    model = StrategiesInstructModel(slip_rate=1.0)  # slips only happen in a last next_step, never here
    question = "What is 5 + 4 + 3 - 1?"
    steps = [Step(T.ANALYZE, "Add from left to right."), Step(T.NEXT_STEP, "5 + 4 = 9")]
    assert _ask(model, "direct_answer", question, steps) == "9 + 3 = 12, 12 - 1 = 11. The answer is \\boxed{11}."
    assert _ask(model, "subquestion", question, steps) == "What is 9 + 3?"


def test_slips_fall_on_the_last_step_only_at_about_the_rate_and_by_one_or_two():
    model = StrategiesInstructModel(slip_rate=0.25)
    question = "What is 2 + 3 + 4 + 1?"
    steps = [Step(T.NEXT_STEP, "4 + 1 = 5"), Step(T.NEXT_STEP, "3 + 5 = 8")]
    slips, n = [], 2000
    for seed in range(n):
        x, sign, y, z = _FACT.search(_ask(model, "next_step", question, steps, seed)).groups()
        assert (int(x), sign, int(y)) == (2, "+", 8)
        slips.append(int(z) - 10)
        assert _ask(model, "next_step", question, steps[:1], seed) == "3 + 5 = 8"  # not the last step: never slips
    wrong = [d for d in slips if d]
    assert set(wrong) <= {-2, -1, 1, 2}
    assert 0.25 * n - 4 * (0.25 * 0.75 * n) ** 0.5 < len(wrong) < 0.25 * n + 4 * (0.25 * 0.75 * n) ** 0.5
    assert _ask(StrategiesInstructModel(slip_rate=0.25), "next_step", question, steps, None).endswith("{10}.")


def test_cross_verification_names_the_wrong_computation():
    model = StrategiesInstructModel()
    q = "What is 2 + 3 + 4 - 1?"
    shared = [Step(T.NEXT_STEP, "4 - 1 = 3"), Step(T.NEXT_STEP, "3 + 3 = 6")]
    messages = verify_messages(q, shared, [Step(T.NEXT_STEP, "2 + 6 = 9. The answer is \\boxed{9}.")],
                               [Step(T.NEXT_STEP, "2 + 6 = 8. The answer is \\boxed{8}.")])
    reply = asyncio.run(ScriptedChat(model).complete(messages, ChatParams())).text
    assert reply.startswith("2 + 6 is not 9")
    messages = verify_messages(q, [Step(T.CLARIFY, "Add all four numbers at once.")],
                               [Step(T.DIRECT_ANSWER, "2 + 3 + 4 - 1 = 10. The answer is \\boxed{10}.")],
                               [Step(T.NEXT_STEP, "4 - 1 = 3")])
    assert asyncio.run(ScriptedChat(model).complete(messages, ChatParams())).text == HURRIED_CHECK


def test_a_prompt_that_is_not_a_four_operand_sum_is_a_failed_call_not_a_guess():
    chat = ScriptedChat(StrategiesInstructModel())
    for question in ("What is 1 + 2 + 3?", "Solve 2x + 4 = 10.", ""):
        reply = asyncio.run(chat.complete(action_messages("next_step", question, []), ChatParams()))
        assert reply.finish_reason == "error" and "four-operand" in reply.error
    with pytest.raises(NotAStrategiesPrompt):
        StrategiesInstructModel().reply("refine", "What is 1 + 2 + 3 + 4?", "(none yet)")
    with pytest.raises(ValueError, match="slip_rate"):
        StrategiesInstructModel(slip_rate=1.5)


def test_listing_steps_reads_the_prompt_listing():
    steps = [Step(T.SUBQUESTION, "What are 1 + 2 and 3 - 4?"), Step(T.NEXT_STEP, "1 + 2 = 3")]
    assert listing_steps(format_steps(steps)) == [("sub-question", "What are 1 + 2 and 3 - 4?"), ("step", "1 + 2 = 3")]
    assert listing_steps("(none yet)") == []


# -- the "opening" pick rule ---------------------------------------------------------------------------

def _path(leaf, tags, correct, value):
    steps = [Step(T(t), f"s{leaf}.{i}") for i, t in enumerate(tags)]
    return PathInfo(leaf, list(range(leaf * 10, leaf * 10 + len(tags))), steps, "1" if correct else "2", correct, value)


def _paths():
    return [
        _path(1, ["analyze", "next_step", "next_step"], True, 0.5),
        _path(2, ["analyze", "direct_answer"], True, 0.9),          # analyze's best: highest value
        _path(3, ["clarify", "direct_answer"], True, 0.4),          # clarify's only correct path
        _path(4, ["next_step", "next_step"], False, 0.0),           # next_step: wrong only, never drawn
        _path(5, ["subquestion", "next_step"], True, 1.0),
        _path(6, ["direct_answer"], True, 1.0),                     # ineligible opening: never drawn
    ]


def test_opening_pick_draws_among_openings_with_a_correct_path_then_takes_the_best_under_it():
    best_under = {"analyze": 2, "clarify": 3, "subquestion": 5}
    drawn = []
    for seed in range(300):
        choice = choose(_paths(), allow_root_fork=False, pick="opening", rng=random.Random(seed))
        opening = choice.best.steps[0].tag.value
        assert choice.best.leaf_id == best_under[opening]
        drawn.append(opening)
        shuffled = _paths()
        random.Random(seed + 1000).shuffle(shuffled)  # the path order must not change the draw
        again = choose(shuffled, allow_root_fork=False, pick="opening", rng=random.Random(seed))
        assert again.best.leaf_id == choice.best.leaf_id
    counts = {k: drawn.count(k) for k in best_under}
    assert all(60 < c < 140 for c in counts.values()), counts  # 100 expected each; 4 sd is 33
    assert choose(_paths(), allow_root_fork=False).best.leaf_id == 5  # "best": the top value wins everywhere


def test_pick_rule_is_checked_and_best_runs_keep_their_fingerprint():
    from rftt_plugin.phase1.job import run_fingerprint
    from rftt_plugin.phase1.prompted_search import PromptedConfig

    with pytest.raises(ValueError, match="pick must be one of best, opening"):
        SampleConfig(pick="longest")
    assert "pick" not in run_fingerprint(PromptedConfig(), SampleConfig(), False, {})["sample"]
    assert run_fingerprint(PromptedConfig(), SampleConfig(pick="opening"), False, {})["sample"]["pick"] == "opening"


def test_gen_sft_cli_passes_the_pick_rule(tmp_path):
    import argparse

    from rftt_plugin.commands.gen_sft import add_arguments, build_job

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--backend", "hf", "--model", str(tmp_path), "--source", "q.jsonl", "--out", str(tmp_path / "o")]
    assert build_job(parser.parse_args(base + ["--pick-path", "opening"])).sample.pick == "opening"
    assert build_job(parser.parse_args(base)).sample.pick == "best"


# -- the quickstart's data stage through gen-sft's job --------------------------------------------------

def test_quickstart_phase1_search_makes_valid_correct_samples_with_every_opening(tmp_path):
    pd = pytest.importorskip("pandas")
    from rftt_plugin.demo.quickstart import Quickstart, QuickstartConfig

    with pytest.raises(ValueError, match="strategies toy only"):
        QuickstartConfig(phase1_data="search")
    cfg = QuickstartConfig.smoke(out=str(tmp_path / "qs"), toy="strategies", phase1_data="search", n_train=48)
    q = Quickstart(cfg, log=lambda _m: None)
    q.stage_model()
    note = q.stage_data()
    data = q.out / "data"
    rows = pd.read_parquet(data / "sft.parquet")["messages"]
    report = json.loads((data / "phase1" / "report.json").read_text())
    assert report["questions"]["done"] == 48 and not report["failed"]
    assert len(rows) == report["rows"] == 48 - sum(report["drops"].values())
    openings, merged = set(), 0
    for messages in rows:
        question, response = messages[0]["content"], messages[1]["content"]
        assert validate(response).ok, response
        expression = re.search(r"What is (.*)\?", question).group(1)
        assert int(re.findall(r"\\boxed\{(-?\d+)\}", response)[-1]) == eval(expression)
        tags = [s.tag.value for s in parse(response)]
        openings.add(tags[0])
        merged += "verify" in tags
    assert openings == {"clarify", "analyze", "subquestion", "next_step"}
    assert 0 < merged < len(rows)
    kinds = json.loads((data / "phase1_samples.json").read_text())
    assert sum(kinds.values()) == len(rows) and "48 train" in note
    before = (data / "sft.parquet").read_bytes()
    Quickstart(cfg, log=lambda _m: None).stage_data()  # resumes from the journals: the same data again
    assert pd.read_parquet(data / "sft.parquet").equals(pd.read_parquet(io.BytesIO(before)))
