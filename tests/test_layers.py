"""The package's layering, checked: core modules import without verl (and, unless they compute
tensors, without torch and transformers); only ``integration/`` and ``cpu/`` mention verl; no
module-level import cycle inside the package; and which package may import which (LAYERS: every
import, at module level or inside a function, found in the AST of every module), with no loop
between packages."""

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


# ----------------------------------------------------------------------------------------------
# Which package may import which
# ----------------------------------------------------------------------------------------------

# A "unit" is a subpackage of rftt_plugin or one of its top-level modules. The foundation units
# hold the contracts everything codes against and import (almost) nothing of the package.
FOUNDATION = {"tokens", "tag_ids", "chat_prompt", "errors", "fingerprint"}
LAYERS: dict[str, set[str]] = {
    "tokens": set(),
    "errors": set(),
    "fingerprint": set(),
    "chat_prompt": set(),
    "import_hooks": set(),
    "tiny_model": set(),                         # the tiny test/demo model: cpu/ and demo/ both use it
    "tag_ids": {"tokens"},
    "prepare": {"tokens", "tag_ids"},
    "export": {"errors", "fingerprint"},
    "reward": FOUNDATION,
    "backends": FOUNDATION,                      # never search/: the engine hands out tag ids
    "store": FOUNDATION,
    "search": FOUNDATION | {"backends"},
    "data": FOUNDATION | {"reward"},
    "config": FOUNDATION | {"backends", "reward", "search"},
    "tree_view": FOUNDATION | {"reward", "search", "store"},
    "phase1": FOUNDATION | {"backends", "data", "jobs", "reward", "search", "store"},
    "evaluation": FOUNDATION | {"backends", "data", "jobs", "reward", "search", "store"},
    "cpu": FOUNDATION | {"backends", "config", "import_hooks", "tiny_model"},  # verl glue (CPU rollout); not demo/
    "integration": FOUNDATION | {"backends", "config", "cpu", "data", "import_hooks", "reward", "search"},
    "demo": FOUNDATION | {"backends", "config", "cpu", "data", "evaluation", "export", "phase1", "prepare",
                          "reward", "search", "store", "tiny_model", "tree_view"},
    "jobs": FOUNDATION | {"backends", "data", "reward", "search", "store", "tree_view"},  # the job shape: model spec, engine
    "commands": FOUNDATION | {"backends", "config", "cpu", "data", "demo", "evaluation", "export",
                              "integration", "jobs", "phase1", "prepare", "reward", "search", "store",
                              "tiny_model", "tree_view"},
    "cli": {"errors", "commands"},
}
# Known broken rules, each to be removed by the change that fixes it (none today).
EXPECTED_BROKEN: set[tuple[str, str]] = set()


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # the bare package (its __version__) is no unit


def unit_imports(package_dir: Path) -> dict[tuple[str, str], list[str]]:
    """{(unit, imported unit): [importing modules]} over every import of every module under
    ``package_dir`` (module level and inside functions), imports within a unit left out."""
    units = {p.stem for p in package_dir.glob("*.py")} | {p.name for p in package_dir.iterdir() if p.is_dir()}
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        module = ".".join(parts)
        src = _unit(module)
        for name in _imports(path, module, top_level_only=False):
            if name.split(".")[0] != package_dir.name or src is None:
                continue
            dst = _unit(name)  # `from rftt_plugin import __version__` names no unit
            if dst in units and dst != src:
                edges.setdefault((src, dst), []).append(module)
    return edges


def broken_rules(edges: dict[tuple[str, str], list[str]], layers: dict[str, set[str]]) -> list[str]:
    """One line per import the table forbids (or per unit the table does not know)."""
    out = []
    for (src, dst), modules in sorted(edges.items()):
        if src not in layers:
            out.append(f"{src} is not in the layer table (imports {dst} in {modules[0]})")
        elif dst not in layers[src]:
            out.append(f"{src} may not import {dst}: {', '.join(sorted(set(modules)))}")
    return out


def package_loops(edges: dict[tuple[str, str], list[str]]) -> list[list[str]]:
    """Every pair of units importing each other, plus one longer cycle if there is one."""
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
    loops = [[a, b, a] for a in sorted(graph) for b in sorted(graph[a]) if a < b and a in graph.get(b, ())]
    cycle = _find_cycle(graph)
    if cycle and not loops:
        loops.append(cycle)
    return loops


def test_every_unit_is_in_the_layer_table():
    units = {_unit(m) for m in _module_files()} - {None}
    assert units <= set(LAYERS), f"add to LAYERS: {sorted(units - set(LAYERS))}"
    for allowed in LAYERS.values():
        assert allowed <= set(LAYERS), allowed - set(LAYERS)


def test_imports_follow_the_layer_table():
    broken = broken_rules(unit_imports(PACKAGE_DIR), LAYERS)
    expected = {f"{a} may not import {b}" for a, b in EXPECTED_BROKEN}
    unexpected = [line for line in broken if line.split(":")[0] not in expected]
    assert not unexpected, "imports the layer table forbids:\n" + "\n".join(unexpected)


def test_no_package_loop():
    edges = {pair: mods for pair, mods in unit_imports(PACKAGE_DIR).items() if pair not in EXPECTED_BROKEN}
    assert package_loops(edges) == [], f"package loops: {package_loops(edges)}"


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "rftt_plugin" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "rftt_plugin"


def test_checker_reports_a_planted_forbidden_import_and_loop(tmp_path):
    ok = {"__init__.py": "", "tokens.py": "", "search/__init__.py": "", "backends/__init__.py": "",
          "search/mcts.py": "from rftt_plugin.backends.base import Backend\nfrom rftt_plugin import tokens\n",
          "backends/base.py": "from ..tokens import FunctionalTag\n"}
    package = _plant(tmp_path / "ok", ok)
    assert broken_rules(unit_imports(package), LAYERS) == [] and package_loops(unit_imports(package)) == []
    # the same set with one import inside a function of backends/engine.py (the loop issue #30 removed)
    planted = _plant(tmp_path / "planted", {**ok, "backends/engine.py": (
        "def make():\n    from rftt_plugin.search.mcts import FunctionalMCTS\n    return FunctionalMCTS\n")})
    edges = unit_imports(planted)
    assert broken_rules(edges, LAYERS) == ["backends may not import search: rftt_plugin.backends.engine"]
    assert package_loops(edges) == [["backends", "search", "backends"]]
    # a relative import and a unit the table does not know are reported too
    extra = _plant(tmp_path / "extra", {**ok, "demo/tiny_model.py": "", "cpu/x.py": "from ..demo import tiny_model\n",
                                        "newpkg/y.py": "import rftt_plugin.tokens\n"})
    assert broken_rules(unit_imports(extra), LAYERS) == [
        "cpu may not import demo: rftt_plugin.cpu.x",
        "newpkg is not in the layer table (imports tokens in rftt_plugin.newpkg.y)"]
