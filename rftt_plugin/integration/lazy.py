"""Run registrations when a heavy verl module is first imported, not at ``import verl``.

verl's registries (advantage estimators, agent loops, engines, rollout classes) live in modules
that cost seconds to import. The entry-point module runs in every verl process, so it only
arranges for ``callback(module)`` to run right after ``module`` finishes executing, in whichever
process imports it; if the module is already imported, the callback runs at once.

The hook is a ``sys.meta_path`` finder that delegates to the other finders and wraps the found
loader's ``exec_module``. It handles ordinary source/bytecode loaders (what pip installs); a
callback error is logged at ERROR on logger ``rftt_plugin`` and re-raised, like the plugin itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import threading
from types import ModuleType
from typing import Callable

logger = logging.getLogger("rftt_plugin")

Callback = Callable[[ModuleType], None]
_callbacks: dict[str, list[Callback]] = {}
_lock = threading.RLock()


def _fire(name: str, module: ModuleType) -> None:
    with _lock:
        pending = _callbacks.pop(name, [])
    for callback in pending:
        try:
            callback(module)
        except BaseException:
            logger.error("rftt-plugin: deferred registration %s on %s failed", getattr(callback, "__qualname__", callback),
                         name, exc_info=True)
            raise


class _Loader(importlib.abc.Loader):
    def __init__(self, name: str, inner: importlib.abc.Loader):
        self._name = name
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _fire(self._name, module)

    def __getattr__(self, item):  # get_source, get_code, is_package, ... for tools that ask
        return getattr(self._inner, item)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _callbacks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # namespace packages and exotic loaders: leave alone (callback then never fires)
        spec.loader = _Loader(fullname, spec.loader)
        return spec


_FINDER = _Finder()


def when_imported(module_name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once ``module_name`` is imported (immediately if it already is)."""
    with _lock:
        module = sys.modules.get(module_name)
        if module is None:
            _callbacks.setdefault(module_name, []).append(callback)
            if _FINDER not in sys.meta_path:
                sys.meta_path.insert(0, _FINDER)
            return
    callback(module)


def pending() -> dict[str, int]:
    """Module names still waiting for their import, with the number of callbacks (for doctor/tests)."""
    with _lock:
        return {name: len(cbs) for name, cbs in _callbacks.items()}
