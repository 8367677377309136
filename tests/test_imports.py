"""Imports point one way: no module of the sampling side imports, even lazily inside a function, a
module that imports it back (the old circles: commands/generate ↔ commands/maps, loading ↔ pipeline)."""

from __future__ import annotations

import ast
import subprocess
import sys
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
    """Module → the package modules it imports anywhere in its file (module level or inside functions)."""
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
        graph[name] = found - {name}
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


def test_each_module_imports_fresh():
    """Each checked module imports on its own in a clean interpreter state (no half-initialised module)."""
    probe = (
        "import importlib, sys\n"
        f"for name in {CHECKED!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('crossattn')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
