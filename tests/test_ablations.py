"""Issue 24's ablations: the toy's rule-based step checker behind the PRM url, each variant's
command line against tree RL's, and the table over seeds (hand-made run folders)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from rftt_plugin.demo.ablations import EXTRA, VARIANTS, ablation_report, variant_overrides
from rftt_plugin.demo.toy_prm import ToyPRMServer, score_toy_steps, split_math_shepherd
from rftt_plugin.reward.prm import HttpStepScorer, PRMError, format_math_shepherd


def test_step_checker_by_hand():
    assert score_toy_steps(["Add from left to right.", "3 + 4 = 7", "7 + 2 = 9", "9 - 5 = 4",
                            "The answer is \\boxed{4}."]) == [1.0] * 5
    # a wrong sum, and an output that does not copy the last result
    assert score_toy_steps(["3 + 4 = 8", "The answer is \\boxed{8}."]) == [0.0, 1.0]
    assert score_toy_steps(["3 + 4 = 7", "The answer is \\boxed{9}."]) == [1.0, 0.0]
    # a direct answer is one equation; a self-correction: the slip scores 0, verify and refine 1
    assert score_toy_steps(["1 + 2 + 3 - 4 = 2"]) == [1.0]
    assert score_toy_steps(["5 + 5 = 11", "Check: 5 + 5 is not 11.", "5 + 5 = 10"]) == [0.0, 1.0, 1.0]
    assert score_toy_steps([]) == [] and score_toy_steps([""]) == [1.0]


def test_math_shepherd_round_trip():
    steps = ["Add from left to right.", "3 + 4 = 7", "The answer is \\boxed{7}."]
    assert split_math_shepherd(format_math_shepherd("What is 3 + 4?", steps)) == steps


def test_the_projects_prm_client_reads_the_toy_server():
    with ToyPRMServer() as server:
        scorer = HttpStepScorer(url=server.url, timeout_s=5, retries=0)
        assert scorer.score_steps("What is 3 + 4?", ["3 + 4 = 7", "The answer is \\boxed{7}."]) == [1.0, 1.0]
        assert scorer.score_steps("What is 3 + 4?", ["3 + 4 = 6", "The answer is \\boxed{6}."]) == [0.0, 1.0]
        request = urllib.request.Request(server.url, data=json.dumps({"query": "not a list"}).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 400 and "'query' must be a list of strings" in err.value.read().decode()
        with pytest.raises(PRMError):  # the client turns the refusal into the PRM's error, never a score
            HttpStepScorer(url=server.url, timeout_s=5, retries=0, request_key="q").score_steps("Q", ["1 + 1 = 2"])


BASE = ["+recipe=rftt", "+dryrun=cpu", "actor_rollout_ref.model.path=/r/sft/hf", "data.seed=0"]
CHAIN = BASE + ["actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent", "algorithm.adv_estimator=grpo"]


@pytest.mark.parametrize("name, base, added, removed", [
    ("rl", BASE, [], []),
    ("rl_chain", CHAIN, [], []),
    ("rl_tree_credit", BASE, ["+recipe=rftt_tree"], ["+recipe=rftt"]),
    ("rl_no_mcts", CHAIN, ["algorithm.adv_estimator=reinforce_plus_plus"], ["algorithm.adv_estimator=grpo"]),
    ("rl_no_sft", BASE, ["actor_rollout_ref.model.path=/r/model/prepared"], ["actor_rollout_ref.model.path=/r/sft/hf"]),
    ("rl_step_reward", BASE, ["rftt.reward.rule=blend", "rftt.reward.prm.url=http://x/get_reward",
                              "rftt.reward.prm.aggregate=mean"], []),
    ("rl_no_verify", BASE, ["rftt.search.blocked_tags=[verify,refine]"], []),
])
def test_each_variant_changes_one_thing(name, base, added, removed):
    got = variant_overrides(name, base, prepared_model="/r/model/prepared", prm_url="http://x/get_reward")
    assert sorted(set(got) - set(base)) == sorted(added) and sorted(set(base) - set(got)) == sorted(removed)


def test_variant_list_and_errors():
    assert [v.name for v in VARIANTS[:2]] == ["rl", "rl_chain"] and len(EXTRA) == 5
    with pytest.raises(ValueError, match="unknown variant 'rl_x'"):
        variant_overrides("rl_x", BASE, prepared_model="/p")
    with pytest.raises(ValueError, match="needs the toy PRM"):
        variant_overrides("rl_step_reward", BASE, prepared_model="/p")


def _run(tmp_path, seed, evals):
    """A seed's folder: config.json and, per evaluation, chain records (+ the tree summary)."""
    out = tmp_path / f"seed_{seed}"
    (out).mkdir()
    (out / "config.json").write_text(json.dumps({"seed": seed}))
    for name, accs in evals.items():
        (out / name / "chain").mkdir(parents=True)
        (out / name / "chain" / "records.jsonl").write_text(
            "".join(json.dumps({"id": f"q{i}", "acc": a}) + "\n" for i, a in enumerate(accs)))
        tree = {"tree": {"overall": {"micro": {"accuracy": {"k=1": 0.5, "k=4": sum(accs) / len(accs)}}}}}
        (out / name / "summary.json").write_text(json.dumps(tree))
    return out


def test_ablation_table_by_hand(tmp_path):
    # seed 0: tree RL right on q0-q2; chain RL on q0, q3; no_sft on none. seed 1: only SFT and tree RL ran.
    s0 = _run(tmp_path, 0, {"eval_sft": [1, 0, 0, 0], "eval_rl": [1, 1, 1, 0], "eval_rl_chain": [1, 0, 0, 1],
                            "eval_rl_no_sft": [0, 0, 0, 0]})
    s1 = _run(tmp_path, 1, {"eval_sft": [0, 0, 1, 1], "eval_rl": [1, 1, 1, 1]})
    table = ablation_report([s0, s1])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    chain = rows["chain RL (GRPO, `single_turn_agent`)"]
    # 2 of 4 right; Wilson 2/4 = [15.0%, 85.0%]; vs tree RL: gained q3, lost q1, q2 -> 1 / 2, p = 1
    assert "50.0% [15.0%, 85.0%]; k=4 50.0%; 1 / 2, p 1" in chain and "(not run)" in chain
    assert rows["without SFT warm-up"].endswith("| 0.0% |")            # the mean over the seeds that ran
    assert "75.0%" in rows["tree RL (`+recipe=rftt`)"] and "100.0%" in rows["tree RL (`+recipe=rftt`)"]
    assert rows["tree RL (`+recipe=rftt`)"].endswith("| 87.5% |")
    assert "(not run) | (not run)" in rows["`<verify>` / `<refine>` masked"]
