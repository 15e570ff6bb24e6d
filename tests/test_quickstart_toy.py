"""The quickstart's toy task, phase-1 sample mix, intervals and reports (fast, no verl)."""

from __future__ import annotations

import json
import random
import re

import pytest

from rftt_plugin.demo.quickstart import Quickstart, QuickstartConfig, mcnemar_exact, seeds_report, wilson_interval
from rftt_plugin.demo.synthetic import phase1_sample, split_sum_problems, sum_problems
from rftt_plugin.tokens import validate


def test_sum_problems_are_every_question_once_with_exact_answers():
    problems = sum_problems(seed=3)
    assert len(problems) == 5 ** 4 * 2 == len({p.expression for p in problems})
    for p in problems:
        a, b, c, op, d = re.fullmatch(r"([1-5]) \+ ([1-5]) \+ ([1-5]) ([+-]) ([1-5])", p.expression).groups()
        assert p.answer == int(a) + int(b) + int(c) + (int(d) if op == "+" else -int(d))
        assert p.question == f"What is {p.expression}?"
        assert len(p.ops) == 3 and p.ops[-1][-1] == p.answer  # three steps, the last one gives the answer
    assert len(sum_problems(max_digit=9, operands=3)) == 9 ** 3 * 2
    assert [p.expression for p in sum_problems(seed=3)] == [p.expression for p in problems]
    assert [p.expression for p in sum_problems(seed=4)] != [p.expression for p in problems]


def test_split_is_disjoint_and_refuses_more_than_exists():
    train, test = split_sum_problems(1000, 250, seed=0)
    assert len(train) == 1000 and len(test) == 250
    assert not {p.expression for p in train} & {p.expression for p in test}
    with pytest.raises(ValueError, match="1250 distinct"):
        split_sum_problems(1200, 100)


def test_phase1_samples_follow_gen_sft_rules():
    """Direct answers only on all-plus questions (the shortest correct path); every sample valid and
    ending in the right boxed answer; merged samples carry a wrong step, <verify> and <refine>."""
    problems = sum_problems(seed=0)[:400]
    rng = random.Random(0)
    kinds = {"direct": 0, "merged": 0, "plain": 0}
    for p in problems:
        kind, text = phase1_sample(p, rng, direct_fraction=0.7, self_correct_fraction=0.1)
        kinds[kind] += 1
        assert validate(text).ok, text
        assert text.rstrip().endswith(f"\\boxed{{{p.answer}}}.\n</output>")
        if kind == "direct":
            assert "-" not in p.expression and "<direct_answer>" in text and "<next_step>" not in text
        if kind == "merged":
            assert "<verify>" in text and "<refine>" in text
    plus = sum("-" not in p.expression for p in problems)
    assert 0.6 * plus < kinds["direct"] < 0.8 * plus  # 70% of all-plus questions, binomial slack
    assert kinds["merged"] > 0 and kinds["plain"] > 0
    none = [phase1_sample(p, random.Random(1), direct_fraction=0.0, self_correct_fraction=0.0)[0] for p in problems]
    assert set(none) == {"plain"}
    with pytest.raises(ValueError, match="fractions"):
        phase1_sample(problems[0], rng, direct_fraction=1.5)


def test_mcnemar_exact_matches_hand_worked_values():
    # n discordant questions, each a fair coin under "no change": p = 2 * P(X <= min) for X ~ Bin(n, 1/2)
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2 ** 10)
    assert mcnemar_exact(1, 5) == pytest.approx(2 * (1 + 6) / 64)  # C(6,0) + C(6,1) = 7
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(34, 21) == pytest.approx(0.1048, abs=1e-4)  # sum of C(55, i) for i <= 21, over 2 ** 54
    with pytest.raises(ValueError, match="gained=-1"):
        mcnemar_exact(-1, 2)


def test_wilson_interval_matches_hand_worked_values():
    # k = 0: upper bound z^2 / (n + z^2) = 3.8415 / 13.8415
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-4)
    # k = n / 2, n = 100: centre 0.5, half-width 1.96 * sqrt(0.0025 + 0.000096) / 1.038415
    lo, hi = wilson_interval(50, 100)
    assert (lo, hi) == (pytest.approx(0.40383, abs=1e-4), pytest.approx(0.59617, abs=1e-4))
    lo, hi = wilson_interval(120, 250)  # p = 0.48: worked separately from the textbook formula
    assert (lo, hi) == (pytest.approx(0.41886, abs=1e-4), pytest.approx(0.54176, abs=1e-4))
    with pytest.raises(ValueError, match="k=11, n=10"):
        wilson_interval(11, 10)


def _summary(chain: float, trees: dict[int, float], n: int = 250, fmt: float = 1.0) -> dict:
    def part(acc: dict) -> dict:
        return {"benchmarks": {"arith": {"n": n, "accuracy": acc, "format_ok": {k: fmt for k in acc}}}}

    return {"chain": part({"pass@1": chain}), "tree": part({f"k={k}": v for k, v in trees.items()})}


def _write(out, name, summary):
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / "summary.json").write_text(json.dumps(summary))


def test_table_reports_intervals_and_whether_they_overlap(tmp_path):
    qs = Quickstart(QuickstartConfig(out=str(tmp_path), n_test=250, eval_limit=250), log=lambda _m: None)
    _write(tmp_path, "eval_sft", _summary(0.40, {1: 0.40, 2: 0.40, 4: 0.42}))
    _write(tmp_path, "eval_rl", _summary(0.64, {1: 0.64, 2: 0.64, 4: 0.46}))
    table = qs.table()
    assert "250 questions" in table
    assert "| after SFT (phase 1) | 40.0% [34.1%, 46.2%] | 40.0% | 40.0% | 42.0% [36.0%, 48.2%] | 100.0% / 100.0% |" in table
    assert "chain pass@1 +24.0 points (95% intervals do not overlap)" in table
    assert "tree acc@4 +4.0 points (95% intervals overlap)" in table
    res = qs.results()
    assert res["eval_rl"]["chain pass@1"]["correct"] == 160


def test_seeds_report_gives_the_spread(tmp_path):
    outs = []
    for seed, (sft, rl) in enumerate([(0.40, 0.60), (0.45, 0.50), (0.50, 0.48)]):
        out = tmp_path / f"seed_{seed}"
        qs = Quickstart(QuickstartConfig(out=str(out), seed=seed), log=lambda _m: None)
        _write(out, "eval_sft", _summary(sft, {1: sft, 2: sft, 4: sft}))
        _write(out, "eval_rl", _summary(rl, {1: rl, 2: rl, 4: rl}))
        if seed < 2:  # chain RL ran for two of the seeds: 0.55 and 0.52
            _write(out, "eval_rl_chain", _summary(0.55 - 0.03 * seed, {1: 0.5, 2: 0.5, 4: 0.5}))
        (out / "results.json").write_text(json.dumps(qs.results()))
        (out / "config.json").write_text(json.dumps({"seed": seed}))
        outs.append(out)
    report = seeds_report(outs)
    assert "chain pass@1 gain from RL, points: min -2.0, mean +7.7, max +20.0; improved in 2 of 3 seeds" in report
    # tree RL minus chain RL: 60 - 55 = +5.0, 50 - 52 = -2.0 (seed 2 has no chain RL)
    assert "tree RL minus chain RL, chain pass@1 points: min -2.0, mean +1.5, max +5.0; tree RL ahead in 1 of 2 seeds" in report
    assert report.count("| ") >= 3 and "40.0% -> 60.0% (+20.0; 95% intervals do not overlap)" in report


def test_eval_min_tag_prior_reaches_the_search_and_is_checked():
    """The quickstart's eval_min_tag_prior goes through EvalConfig into the search (0 = faithful)."""
    from rftt_plugin.evaluation.job import EvalConfig, EvalError

    assert EvalConfig(model="m", out="o", mode="tree").search_config().min_tag_prior == 0.0
    assert EvalConfig(model="m", out="o", mode="tree", min_tag_prior=0.05).search_config().min_tag_prior == 0.05
    with pytest.raises(EvalError, match="min_tag_prior"):
        EvalConfig(model="m", out="o", mode="tree", min_tag_prior=1.5).validate()
    assert QuickstartConfig().eval_min_tag_prior == 0.0


@pytest.mark.parametrize("flag, expected", [
    ([], dict(rl_steps=60, sft_steps=600, n_test=250, rollouts=(1, 2, 4))),
    (["--reduced"], dict(rl_steps=40, sft_steps=600, n_test=250, rollouts=(1, 2))),
    (["--smoke"], dict(rl_steps=2, sft_steps=20, n_test=6, rollouts=(1, 2))),
    (["--reduced", "--rl-steps", "30"], dict(rl_steps=30, sft_steps=600)),
    (["--toy", "strategies"], dict(toy="strategies", sft_steps=1500, rl_steps=60)),
    (["--toy", "strategies", "--sft-steps", "900"], dict(toy="strategies", sft_steps=900)),
])
def test_cli_size_presets(monkeypatch, tmp_path, flag, expected):
    """--reduced (CI's learning check) and --smoke pick their sizes; explicit flags still win."""
    import argparse

    from rftt_plugin.commands import quickstart as command
    from rftt_plugin.demo import quickstart as demo

    seen = []

    def fake_run(self):  # record the config instead of running verl
        seen.append(self.config)
        raise RuntimeError("stop here")

    monkeypatch.setattr(demo.Quickstart, "run", fake_run)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args(["--out", str(tmp_path), *flag])) == 1
    for key, value in expected.items():
        assert getattr(seen[0], key) == value, key


def test_cli_refuses_smoke_with_reduced(capsys):
    import argparse

    from rftt_plugin.commands import quickstart as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--smoke", "--reduced"])
    assert "not allowed with" in capsys.readouterr().err


def test_table_compares_tree_rl_with_chain_rl_question_by_question(tmp_path):
    qs = Quickstart(QuickstartConfig(out=str(tmp_path), n_test=4, eval_limit=4), log=lambda _m: None)
    outcomes = {"eval_sft": [0, 0, 1, 0], "eval_rl": [1, 0, 1, 1], "eval_rl_chain": [1, 1, 0, 0]}
    for name, accs in outcomes.items():
        _write(tmp_path, name, _summary(sum(accs) / 4, {1: 0.5, 2: 0.5, 4: 0.5}, n=4))
        (tmp_path / name / "chain").mkdir()
        (tmp_path / name / "chain" / "records.jsonl").write_text(
            "".join(json.dumps({"id": f"q{i}", "acc": acc}) + "\n" for i, acc in enumerate(accs)))
    table = qs.table()
    # tree RL right, chain RL wrong: q2, q3; the other way round: q1. p = 2 * P(Bin(3, 1/2) <= 1) = 1.0
    assert "tree RL vs chain RL (the paper's claim), chain pass@1 question by question: 2 right only after " \
           "tree RL, 1 only after chain RL (exact McNemar p = 1)" in table
    assert "chain, question by question: 2 gained / 0 lost" in table  # tree RL vs SFT: q0, q3


def test_rl_overrides_keep_the_recipe_replay_order_and_batching_switch(tmp_path):
    """The quickstart never overrides the recipe's dataset-order replay buffer; rl_batch_invariant
    (off by default) makes hfcpu serve one request at a time."""
    default = Quickstart(QuickstartConfig(out=str(tmp_path)), log=lambda _m: None).rl_overrides()
    assert "+recipe=rftt" in default
    assert not any("custom_sampler" in o or "trainer_mode" in o for o in default)
    assert not any("max_batch_size" in o for o in default)
    one_at_a_time = Quickstart(QuickstartConfig(out=str(tmp_path), rl_batch_invariant=True),
                               log=lambda _m: None).rl_overrides()
    assert "actor_rollout_ref.rollout.engine_kwargs.hfcpu.max_batch_size=1" in one_at_a_time
    assert not any("request_seeds" in o for o in default)  # the tree search seeds its own requests
    chain = Quickstart(QuickstartConfig(out=str(tmp_path)), log=lambda _m: None).rl_overrides("rl_chain", chain=True)
    assert "actor_rollout_ref.rollout.engine_kwargs.hfcpu.request_seeds=true" in chain
    assert "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent" in chain


def test_stop_after_ends_the_run_after_that_stage_and_a_rerun_goes_on(tmp_path):
    from rftt_plugin.demo.quickstart import Quickstart, QuickstartConfig

    calls = []

    def fake(name, done):
        def fn():
            calls.append(name)
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text("{}")
            return ""
        return fn

    def patched(config):
        q = Quickstart(config, log=lambda _m: None)
        o = q.out
        q.stage_model = fake("model", o / "model" / "prepared" / "rftt_tokens.json")
        q.stage_data = fake("data", o / "data" / "arith_test.jsonl")
        q.stage_sft = fake("sft", o / "sft" / "hf" / "config.json")
        q._evaluate = lambda model, name: fake(name, o / name / "summary.json")()
        return q

    out = tmp_path / "qs"
    patched(QuickstartConfig(out=str(out), stop_after="data")).run()
    assert calls == ["model", "data"]
    assert [s["name"] for s in json.loads((out / "stages.json").read_text())] == ["model", "data"]
    patched(QuickstartConfig(out=str(out), stop_after="eval_sft")).run()
    assert calls == ["model", "data", "sft", "eval_sft"]  # done stages skipped, then on to the next stop
    with pytest.raises(RuntimeError, match="toy 'sums' -> 'strategies'"):  # a folder of another toy is not resumed
        patched(QuickstartConfig(out=str(out), toy="strategies")).run()
    assert calls == ["model", "data", "sft", "eval_sft"]
    with pytest.raises(RuntimeError, match="toy 'sums' -> 'strategies'"):
        patched(QuickstartConfig(out=str(out), toy="strategies", phase1_data="search")).run()
    # nor one with other SFT data, other SFT steps or another evaluation size; each change is named
    with pytest.raises(RuntimeError, match=r"\(sft_steps 600 -> 700; eval_limit 250 -> 100\)"):
        patched(QuickstartConfig(out=str(out), sft_steps=700, eval_limit=100)).run()
    first = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**first, "toy": "strategies", "sft_steps": 1500}))
    with pytest.raises(RuntimeError, match=r"\(phase1_data 'written' -> 'search'\)"):
        patched(QuickstartConfig(out=str(out), toy="strategies", phase1_data="search")).run()
    assert calls == ["model", "data", "sft", "eval_sft"]
    # studies that only add stages may be switched on in a finished folder
    (out / "config.json").write_text(json.dumps(first))
    patched(QuickstartConfig(out=str(out), stop_after="eval_sft", compare_chain=True, timeout_s=60)).run()
    assert calls == ["model", "data", "sft", "eval_sft"]
    # a config.json from before a setting existed is resumed (the missing setting is not compared) ...
    (out / "config.json").write_text(json.dumps({k: v for k, v in first.items() if k != "rl_min_tag_prior"}))
    patched(QuickstartConfig(out=str(out), stop_after="eval_sft", rl_min_tag_prior=0.2)).run()
    # ... but toy and phase1_data default to the values such runs used (sft_steps, missing, is not compared)
    (out / "config.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(RuntimeError, match=r"\(toy 'sums' -> 'strategies'\)"):
        patched(QuickstartConfig(out=str(out), toy="strategies")).run()
    (out / "config.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="config.json: not readable JSON"):
        patched(QuickstartConfig(out=str(out))).run()
    assert calls == ["model", "data", "sft", "eval_sft"]
    with pytest.raises(ValueError, match="unknown phase1_data 'mcts'"):
        QuickstartConfig(phase1_data="mcts")
    with pytest.raises(ValueError, match="unknown stage 'sft2'"):
        QuickstartConfig(stop_after="sft2")
    with pytest.raises(ValueError, match="unknown toy"):
        QuickstartConfig(toy="words")


def test_comparison_line_reads_greedy_tree_and_sc_at_equal_tokens():
    from rftt_plugin.demo.quickstart import comparison_line

    result = {"points": [{"mode": "chain", "label": "pass@1", "k": 1, "accuracy": 0.712},
                         {"mode": "tree", "label": "k=4", "k": 4, "accuracy": 0.8},
                         {"mode": "tree", "label": "k=16", "k": 16, "accuracy": 0.848}],
              "paired": [{"a": "chain pass@1", "b": "tree k=4", "gained": 1, "lost": 1, "p": 1.0},
                         {"a": "chain pass@1", "b": "tree k=16", "gained": 39, "lost": 5, "p": 1.4e-7},
                         {"a": "sc k=8", "b": "tree k=16", "equal_tokens": True, "gained": 29, "lost": 6, "p": 1.2e-4}]}
    assert comparison_line(result) == ("greedy 71.2% -> tree@16 84.8% (39 gained / 5 lost, p 1.4e-07); against SC at "
                                       "equal tokens (k=8): 29 gained / 6 lost, p 0.00012")
    result["paired"].pop()  # no sc mode: no SC clause
    assert comparison_line(result).endswith("p 1.4e-07)")
