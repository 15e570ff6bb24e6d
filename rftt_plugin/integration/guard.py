"""No silent fallback: a recipe composed while the verl plugin is not loaded must stop early.

Every recipe routes one early-read key through the OmegaConf resolver ``rftt_require_plugin``.
verl's driver reads ``actor_rollout_ref.rollout.full_determinism`` in ``run_ppo`` before it
starts Ray, which resolves the interpolation:

* plugin loaded (``rftt_plugin.integration.plugin`` finished importing): the resolver returns
  its argument, so the key keeps its normal value;
* plugin not loaded (``VERL_USE_EXTERNAL_PLUGINS=none``, an import error that verl swallowed, a
  worker environment without the package): the resolver raises a message that says so and how
  to fix it. The resolver itself is registered by this module's importers: the verl plugin and
  the ``hydra_plugins`` fallback that also makes the recipe group resolvable, so the check is
  present whenever the recipe is.

The same resolver validates the whole composed config (the typed ``rftt:`` schema, unknown keys,
ranges, and the cross-section checks of ``rftt_plugin.config.schema``) before Ray starts, so a typo
or an impossible setting stops the run in seconds with one line naming the key; with a PRM reward
rule it also makes one real scoring call to ``rftt.reward.prm.url`` (a down PRM stops the run here,
not after hours of leaves dropped for want of a score).

(If rftt-plugin is not installed at all, ``+recipe=rftt`` cannot resolve and Hydra adds a plain
``recipe: rftt`` key; nothing of ours can run then. ``--info defaults`` shows what was composed.)
"""

from __future__ import annotations

import sys

RESOLVER = "rftt_require_plugin"
PLUGIN_MODULE = "rftt_plugin.integration.plugin"

NOT_LOADED_MESSAGE = (
    "This config uses an rftt-plugin recipe (+recipe=rftt...), but rftt-plugin's verl plugin is not "
    "loaded in this process, so the run would not use RFTT. Causes: VERL_USE_EXTERNAL_PLUGINS "
    "excludes 'rftt' (it is {policy!r}), or the plugin failed to import (look for an ERROR from "
    "logger 'rftt_plugin' above). Fix it, then check with `rftt doctor`."
)


def plugin_loaded() -> bool:
    module = sys.modules.get(PLUGIN_MODULE)
    return bool(module is not None and getattr(module, "LOADED", False))


def require_plugin(value=None, *, _root_=None):
    """OmegaConf resolver: pass ``value`` through when the plugin is loaded and the composed config
    passes :func:`rftt_plugin.config.schema.check_composed_config`, else raise one clear line."""
    if not plugin_loaded():
        import os

        raise RuntimeError(NOT_LOADED_MESSAGE.format(policy=os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto")))
    if _root_ is not None:
        from rftt_plugin.config.schema import check_composed_config

        settings = check_composed_config(_root_)
        reward = getattr(settings, "reward", None)
        if reward is not None and reward.needs_prm:
            check_prm(reward.prm)
    return value


_PRM_CHECKED: dict = {}  # PRM settings -> report: the resolver runs on every read of its key


def check_prm(prm) -> str:
    """One real scoring call to a PRM service before Ray starts (once per process and setting)."""
    if prm not in _PRM_CHECKED:
        from rftt_plugin.reward.prm import preflight

        _PRM_CHECKED[prm] = preflight(prm)  # raises PRMError, one line naming rftt.reward.prm.url
    return _PRM_CHECKED[prm]


def register_resolver() -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(RESOLVER, require_plugin, replace=True)
