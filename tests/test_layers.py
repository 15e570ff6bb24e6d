"""The package's layering, checked: core modules import without verl (and, unless they compute
tensors, without torch and transformers); only ``integration/`` and ``cpu/`` mention verl; no
module-level import cycle inside the package."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import rftt_plugin

PACKAGE_DIR = Path(rftt_plugin.__file__).parent
GLUE = ("rftt_plugin.integration", "rftt_plugin.cpu")  # the only layers allowed to import verl
TENSOR_MODULES = {"rftt_plugin.search.advantage"}      # computes advantages with torch at import


def _all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE_DIR)], "rftt_plugin."))


CORE = [m for m in _all_modules() if not m.startswith(GLUE)]

_BLOCKER = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked by the test: " + name)
sys.meta_path.insert(0, _Blocked())
import {module}
leaked = sorted({{m.split(".")[0] for m in sys.modules}} & set({blocked!r}))
assert not leaked, leaked
"""


def _import_blocked(module: str, blocked: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCKER.format(module=module, blocked=blocked)],
                          capture_output=True, text=True, timeout=120)


def test_the_core_list_covers_the_method():
    # a renamed or vanished package would silently shrink the parametrised checks below
    for package in ("tokens", "reward", "search", "search.credit", "phase1", "data", "store", "evaluation",
                    "backends", "config", "tree_view", "demo"):
        assert any(m == f"rftt_plugin.{package}" or m.startswith(f"rftt_plugin.{package}.") for m in CORE), package


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_without_verl(module):
    blocked = ["verl"] if module in TENSOR_MODULES else ["verl", "torch", "transformers"]
    result = _import_blocked(module, blocked)
    assert result.returncode == 0, f"{module} needs one of {blocked} at import:\n{result.stderr[-1500:]}"


def test_blocking_works():
    # the harness itself must be able to fail: the estimator module needs torch
    result = _import_blocked("rftt_plugin.search.advantage", ["torch"])
    assert result.returncode != 0 and "blocked by the test: torch" in result.stderr


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """Absolute names of what ``module`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def test_only_the_glue_layers_mention_verl():
    offenders = []
    for module, path in _module_files().items():
        if module.startswith(GLUE):
            continue
        if any(name == "verl" or name.startswith("verl.") for name in _imports(path, module, top_level_only=False)):
            offenders.append(module)
    assert not offenders, f"modules outside {GLUE} import verl: {offenders}"


def test_no_module_level_import_cycle():
    files = _module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        deps = set()
        for name in _imports(path, module, top_level_only=True):
            # `from pkg import sub` may name a submodule; `import a.b.c` loads a, a.b, a.b.c
            parts = name.split(".")
            deps.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        graph[module] = {d for d in deps if d in files and d != module}
    # a package's __init__ importing its own submodules is not a cycle; a submodule importing
    # its package back is (Python then runs the package __init__ first), so keep those edges
    for module in graph:
        graph[module] = {d for d in graph[module] if not d.startswith(module + ".")}
    cycle = _find_cycle(graph)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (depth-first search), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
