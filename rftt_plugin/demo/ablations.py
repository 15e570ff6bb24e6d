"""The paper's comparison and ablations on the CPU toy, at equal budget (``rftt quickstart --ablations``).

Every variant starts from the same seed's SFT checkpoint and runs ``main_ppo`` with the same
prompts per step, samples per prompt, steps, learning rate and KL as tree RL (``+recipe=rftt``).
It changes exactly one thing:

=================  ==========================================================================
``rl``             tree RL: ``+recipe=rftt`` (functional MCTS, REINFORCE++, outcome reward)
``rl_chain``       chain RL: verl's ``single_turn_agent`` + GRPO (the paper's baseline)
``rl_tree_credit`` ``+recipe=rftt_tree``: tree credit (step values) and its estimator
``rl_no_mcts``     without MCTS: functional-token paths sampled whole by ``single_turn_agent``,
                   REINFORCE++ as tree RL (search removed, estimator kept)
``rl_no_sft``      without SFT warm-up: tree RL from the prepared base model
``rl_step_reward`` a step reward: rule ``blend`` (0.6 correct + 0.4 PRM) with the toy's rule-based
                   step checker behind ``rftt.reward.prm.url`` (:mod:`rftt_plugin.demo.toy_prm`)
``rl_no_verify``   ``<verify>`` / ``<refine>`` masked: ``rftt.search.blocked_tags=[verify,refine]``
=================  ==========================================================================

:func:`ablation_report` turns the seeds' evaluations into one table: chain pass@1 and tree acc
per variant and seed with 95% Wilson intervals, and each variant against tree RL question by
question (gained / lost, exact McNemar p).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rftt_plugin.evaluation.stats import paired, wilson_interval


@dataclass(frozen=True)
class Variant:
    name: str        # stage and folder name (its evaluation: eval_<name>)
    title: str
    chain: bool = False  # single_turn_agent instead of the tree agent loop


VARIANTS: tuple[Variant, ...] = (
    Variant("rl", "tree RL (`+recipe=rftt`)"),
    Variant("rl_chain", "chain RL (GRPO, `single_turn_agent`)", chain=True),
    Variant("rl_tree_credit", "tree credit (`+recipe=rftt_tree`)"),
    Variant("rl_no_mcts", "without MCTS (sampled tag paths, REINFORCE++)", chain=True),
    Variant("rl_no_sft", "without SFT warm-up"),
    Variant("rl_step_reward", "step reward (rule-based step checker as PRM, rule blend)"),
    Variant("rl_no_verify", "`<verify>` / `<refine>` masked"),
)
EXTRA = tuple(v for v in VARIANTS if v.name not in ("rl", "rl_chain"))  # what --ablations adds


def variant_overrides(name: str, overrides: list[str], *, prepared_model: Path, prm_url: str | None = None) -> list[str]:
    """Tree RL's (or chain RL's) command line changed as variant ``name`` says."""
    out = list(overrides)
    if name == "rl_tree_credit":
        out = ["+recipe=rftt_tree" if o == "+recipe=rftt" else o for o in out]
    elif name == "rl_no_mcts":
        out = [o for o in out if not o.startswith("algorithm.adv_estimator=")] + \
            ["algorithm.adv_estimator=reinforce_plus_plus"]
    elif name == "rl_no_sft":
        out = [f"actor_rollout_ref.model.path={prepared_model}" if o.startswith("actor_rollout_ref.model.path=")
               else o for o in out]
    elif name == "rl_step_reward":
        if not prm_url:
            raise ValueError("rl_step_reward needs the toy PRM's url")
        out += ["rftt.reward.rule=blend", f"rftt.reward.prm.url={prm_url}", "rftt.reward.prm.aggregate=mean"]
    elif name == "rl_no_verify":
        out += ["rftt.search.blocked_tags=[verify,refine]"]
    elif name not in ("rl", "rl_chain"):
        raise ValueError(f"unknown variant {name!r}; variants: {', '.join(v.name for v in VARIANTS)}")
    return out


def _chain_outcomes(run: Path, eval_name: str) -> dict[str, bool] | None:
    """The variant's chain outcomes, None when it has not run."""
    from rftt_plugin.demo.quickstart import chain_outcomes

    path = Path(run) / eval_name
    return chain_outcomes(path) if (path / "chain" / "records.jsonl").exists() else None


def _tree_acc(run: Path, eval_name: str) -> tuple[str, float] | None:
    path = Path(run) / eval_name / "summary.json"
    if not path.exists():
        return None
    tree = json.loads(path.read_text())["tree"]["overall"]["micro"]["accuracy"]
    label = list(tree)[-1]
    return label, tree[label]


def ablation_report(outs: list[Path]) -> str:
    """One markdown table over the seeds' runs (missing variants are marked, never guessed)."""
    seeds = [json.loads((Path(o) / "config.json").read_text())["seed"] for o in outs]
    head = ["variant"] + [f"seed {s}: chain pass@1 [95% CI]; tree; vs tree RL (gained / lost, p)" for s in seeds] + \
        ["mean chain pass@1"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = [_chain_outcomes(o, "eval_rl") for o in outs]
    for v in (Variant("sft", "after SFT only (no RL)"), *VARIANTS):
        eval_name = "eval_sft" if v.name == "sft" else f"eval_{v.name}"
        cells, accs = [], []
        for out, ref in zip(outs, base):
            mine = _chain_outcomes(out, eval_name)
            if mine is None:
                cells.append("(not run)")
                continue
            n, k = len(mine), sum(mine.values())
            lo, hi = wilson_interval(k, n)
            accs.append(k / n)
            tree = _tree_acc(out, eval_name)
            cell = f"{k / n:.1%} [{lo:.1%}, {hi:.1%}]" + (f"; {tree[0]} {tree[1]:.1%}" if tree else "")
            if ref is not None and v.name != "rl":
                t = paired(ref, mine)
                cell += f"; {t['gained']} / {t['lost']}, p {t['p']:.2g}"
            cells.append(cell)
        mean = f"{100 * sum(accs) / len(accs):.1f}%" if accs else "-"
        rows.append(f"| {v.title} | " + " | ".join(cells) + f" | {mean} |")
    note = ("Each variant changes one thing against tree RL and has the same budget (prompts x samples x steps, "
            "lr, KL); chain pass@1 is greedy decoding on the held-out questions; \"vs tree RL\": questions the "
            "variant gets right and tree RL wrong / the reverse, exact McNemar p.")
    return "\n".join(["Ablations (rftt quickstart --ablations):", "", *rows, "", note])
