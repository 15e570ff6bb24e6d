"""verl advantage estimator ``rftt_tree`` (formula: :mod:`rftt_plugin.search.advantage`).

verl calls estimators with ``token_level_rewards``, ``response_mask``, ``config`` (the
``algorithm`` section) and ``index`` (the uid of each row = one tree); ``gamma`` comes from
``algorithm.gamma``, the normalisation from ``algorithm.rftt_normalize`` and its floor from
``algorithm.rftt_min_std`` (set by the ``rftt_tree`` recipe from ``rftt.credit.normalize`` and
``rftt.credit.min_std``).
"""

from __future__ import annotations

NAME = "rftt_tree"


def compute_rftt_tree_advantage(token_level_rewards, response_mask, config=None, index=None, **kwargs):
    from rftt_plugin.search.advantage import rftt_tree_advantage

    if config is None:
        raise ValueError("the rftt_tree estimator needs verl's algorithm config (gamma, rftt_normalize)")
    gamma = float(config.get("gamma", 1.0))
    normalize = config.get("rftt_normalize", None)
    if normalize is None:
        raise ValueError("algorithm.rftt_normalize is not set: use `+recipe=rftt_tree`, which sets it from "
                         "rftt.credit.normalize (global | tree | none)")
    min_std = config.get("rftt_min_std", None)
    if min_std is None:
        from rftt_plugin.search.advantage import DEFAULT_MIN_STD as min_std
    if index is not None:
        index = list(index)
    return rftt_tree_advantage(token_level_rewards, response_mask, gamma=gamma, normalize=str(normalize), index=index,
                               min_std=float(min_std))


def register(core_algos_module) -> None:
    """Called when ``verl.trainer.ppo.core_algos`` is imported (see ``rftt_plugin.import_hooks``)."""
    if core_algos_module.ADV_ESTIMATOR_REGISTRY.get(NAME) is compute_rftt_tree_advantage:
        return
    core_algos_module.register_adv_est(NAME)(compute_rftt_tree_advantage)
