"""Imports point one way: no module of the sampling side imports, even lazily inside a function, a
module that imports it back (the old circles: commands/generate ↔ commands/maps, loading ↔ pipeline)."""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "crossattn"
#: modules whose imports must form no circle (the sampling commands and what they load)
CHECKED = [
    "crossattn.commands.generate",
    "crossattn.commands.maps",
    "crossattn.commands.eval",
    "crossattn.commands.shared",
    "crossattn.sampling",
    "crossattn.sampling.request",
    "crossattn.sampling.model_ref",
    "crossattn.sampling.outputs",
    "crossattn.sampling.run",
    "crossattn.web.session",
    "crossattn.models.loading",
    "crossattn.models.pipeline",
    "crossattn.models.relation_guidance",
    "crossattn.models.vocabulary",
    "crossattn.files",
    "crossattn.attention.record",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports anywhere in its file (module level or inside functions).

    A fresh copy each call (callers may change it) of the graph parsed once per test session: the sources
    do not change while the suite runs, and parsing every module takes a tenth of a second or more."""
    return {name: set(deps) for name, deps in _parsed_import_graph().items()}


@cache
def _parsed_import_graph() -> dict[str, frozenset[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                found |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in files}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in files}
        graph[name] = frozenset(found - {name})
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    assert "crossattn.commands.shared" in graph["crossattn.commands.generate"]  # inside run()
    assert "crossattn.models.pipeline" in graph["crossattn.models.loading"]  # inside pipeline_class()


@pytest.mark.parametrize("module", CHECKED)
def test_no_import_circle_through(module):
    graph = import_graph()
    circles = [dep for dep in graph[module] if module in reachable(graph, dep) | {dep}]
    assert not circles, f"{module} imports {circles}, which import it back"


def test_the_old_pairs_point_one_way():
    graph = import_graph()
    assert "crossattn.commands.generate" not in graph["crossattn.commands.maps"]
    assert "crossattn.commands.maps" not in graph["crossattn.commands.generate"]
    assert "crossattn.models.loading" not in graph["crossattn.models.pipeline"]


@contextmanager
def without_crossattn_modules() -> Iterator[None]:
    """Hide every loaded ``crossattn`` module for the block, then put the originals back.

    Inside, the next import of a crossattn module runs its package from nothing, as in a new interpreter
    (third-party modules such as torch stay loaded, as they would after the first import there); outside,
    the rest of the suite keeps the module objects (and classes) it already holds."""
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "crossattn"}
    try:
        for name in saved:
            del sys.modules[name]
        yield
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "crossattn"]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_each_module_imports_fresh():
    """Each checked module imports with no other crossattn module loaded before it (no half-initialised
    module, no import that works only when another module went first). In this process, not a new one:
    a new interpreter spent ~5 s importing torch and diffusers again, which this one already holds."""
    import crossattn

    for name in CHECKED:
        with without_crossattn_modules():
            assert importlib.import_module(name).__name__ == name
    assert sys.modules["crossattn"] is crossattn, "the suite's own modules are back in place"


def test_hiding_the_modules_makes_the_next_import_run_the_package_again():
    import crossattn.files

    with without_crossattn_modules():
        assert "crossattn.files" not in sys.modules
        again = importlib.import_module("crossattn.files")
        assert again is not crossattn.files
    assert sys.modules["crossattn.files"] is crossattn.files
