"""Fallback discovery of the ``recipe`` group for tools that compose configs without importing verl.

Hydra scans the ``hydra_plugins`` namespace package for SearchPathPlugin subclasses. The primary
mechanism is the verl entry point (``rftt_plugin.integration.plugin``); both add the same path.
This fallback also registers the recipes' guard resolver, so a recipe that resolves while the
verl plugin is not loaded stops with a clear message instead of training on stock defaults.
"""

from rftt_plugin.integration import guard as _guard
from rftt_plugin.integration.hydra_searchpath import RfttSearchPathPlugin  # noqa: F401

_guard.register_resolver()
