"""Make the ``recipe`` config group (``+recipe=rftt``) visible to verl's Hydra entry points."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "rftt-plugin"
CONFIG_MODULE = "pkg://rftt_plugin.config"


class RfttSearchPathPlugin(SearchPathPlugin):
    """Appends ``pkg://rftt_plugin.config`` (holding ``recipe/*.yaml``) to Hydra's search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for element in search_path.get_path():
            if element.path == CONFIG_MODULE:
                return
        search_path.append(provider=PROVIDER, path=CONFIG_MODULE)


def register() -> None:
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    # Hydra's registry is keyed by class; registering twice is harmless but we keep it idempotent.
    if not getattr(RfttSearchPathPlugin, "_rftt_registered", False):
        plugins.register(RfttSearchPathPlugin)
        RfttSearchPathPlugin._rftt_registered = True
