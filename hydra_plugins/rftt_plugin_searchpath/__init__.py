"""Fallback discovery of the ``recipe`` group for tools that compose configs without importing verl.

Hydra scans the ``hydra_plugins`` namespace package for SearchPathPlugin subclasses. The primary
mechanism is the verl entry point (``rftt_plugin.integration.plugin``); both add the same path,
and the plugin de-duplicates it.
"""

from rftt_plugin.integration.hydra_searchpath import RfttSearchPathPlugin  # noqa: F401
