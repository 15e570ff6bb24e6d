"""Run a callback right after a given module has been imported (a post-import hook).

Why: the registries and symbols the plugin needs live in heavy verl modules (advantage estimators,
agent loops, the FSDP engine, the rollout registry, ...). Importing them from the ``verl.plugins`` entry point would make every
``import verl`` seconds slower and can import-cycle, because the entry point runs while
``verl/__init__.py`` is still executing. Instead we wait until verl imports them itself.

How: a ``sys.meta_path`` finder that, for a watched module name, asks the remaining finders for
the real spec and wraps that spec's loader instance so ``exec_module`` runs the callbacks after
the module body. Loader instances are per-module for normal source/bytecode files, so nothing else
is affected. If the module is already imported when a hook is added, the callback runs at once.

Callbacks run exactly once per module. An exception in a callback is logged at ERROR on logger
``rftt_plugin`` (verl would otherwise hide it) and propagates out of the import statement that
triggered it: a failed registration must be loud, never silent. Shared by ``rftt_plugin.integration``
and ``rftt_plugin.cpu``; imports nothing heavy.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
import threading
from typing import Callable

logger = logging.getLogger("rftt_plugin")

Callback = Callable[[object], None]


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.pending: dict[str, list[Callback]] = {}
        self._lock = threading.RLock()
        self._busy = threading.local()  # re-entrancy guard while we ask the other finders

    def add(self, module_name: str, callback: Callback) -> None:
        with self._lock:
            self.pending.setdefault(module_name, []).append(callback)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.pending or getattr(self._busy, "active", False):
            return None
        self._busy.active = True
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._busy.active = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # namespace packages / odd loaders: let the import proceed unhooked
        original_exec = spec.loader.exec_module

        def exec_module(module, _original=original_exec, _name=fullname):
            _original(module)
            self.fire(_name, module)

        spec.loader.exec_module = exec_module  # instance attribute: this module's loader only
        return spec

    def fire(self, module_name: str, module) -> None:
        with self._lock:
            callbacks = self.pending.pop(module_name, [])
        for callback in callbacks:
            try:
                callback(module)
            except BaseException:
                logger.error("rftt-plugin: deferred registration %s after importing %s failed",
                             getattr(callback, "__qualname__", callback), module_name, exc_info=True)
                raise


_FINDER = _PostImportFinder()


def when_imported(module_name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once ``module_name`` has been imported (now, if it already is)."""
    module = sys.modules.get(module_name)
    if module is not None:
        callback(module)
        return
    _FINDER.add(module_name, callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def pending() -> list[str]:
    """Module names whose hooks have not fired yet (for status reports)."""
    return sorted(_FINDER.pending)
