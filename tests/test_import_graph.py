"""The whole package's import graph has no cycle, counting imports inside functions (a lazy import
that closes a circle still couples the two modules both ways). The graph is built from the source
with ``ast`` (:func:`tests.test_imports.import_graph`: every module under src/crossattn, relative
imports resolved), so the check needs nothing imported and fails with the circle it found.

Also: the package finds its own modules by ``import`` statements (no ``importlib`` look-ups, no
``except ImportError`` around them), except the lazy public API of ``crossattn/__init__``, and a model
module does not import training-output code."""

from __future__ import annotations

import ast

from .test_imports import PACKAGE, import_graph, module_name

#: lazy public API: ``importlib`` there keeps ``import crossattn`` cheap
LAZY_ENTRY_POINTS = {"crossattn"}
#: the model part: what loads and runs a model, which training code builds on and not the reverse
MODEL_MODULES = [
    "crossattn.models.model",
    "crossattn.models.clip_model",
    "crossattn.models.pipeline",
    "crossattn.models.tokenizer",
]
TRAINING_OUTPUTS = {"crossattn.training.train_outputs", "crossattn.training.train", "crossattn.training.runs"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_the_graph_covers_every_module_and_resolves_relative_imports():
    graph = import_graph()
    assert len(graph) == len(list(PACKAGE.rglob("*.py")))
    assert "crossattn.attention.layers" in graph["crossattn.attention.trace"]  # from .layers import ...
    assert "crossattn.files" in graph["crossattn.attention.maps"]  # from ..files import ..., inside a method


def test_the_package_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def is_own(module: str | None, level: int = 0) -> bool:
    """Whether an import names a module of this package (relative, or ``crossattn...``)."""
    return level > 0 or (module or "").split(".")[0] == "crossattn"


def falls_back_on_import_error(handler: ast.ExceptHandler) -> bool:
    """A handler that catches ImportError and carries on (one that raises, e.g. a ``ValueError`` naming the
    extra to install, as ``crossattn serve`` does for Gradio, hides nothing)."""
    caught = ast.unparse(handler.type) if handler.type is not None else ""
    raises = any(isinstance(n, ast.Raise) for stmt in handler.body for n in ast.walk(stmt))
    return ("ImportError" in caught or "ModuleNotFoundError" in caught) and not raises


def own_module_lookups(tree: ast.AST) -> list[str]:
    """``importlib`` look-ups of the package's modules and ``except ImportError`` fallbacks around imports of them,
    as ``line: what`` (third-party extras may be probed: a missing one is the user's to install)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("import_module", "find_spec"):
            first = node.args[0] if node.args else None
            if not isinstance(first, ast.Constant) or is_own(str(first.value).lstrip("."), str(first.value)[:1] == "."):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Try) and any(falls_back_on_import_error(h) for h in node.handlers):
            guarded = [n for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Import | ast.ImportFrom)]
            own = [
                n
                for n in guarded
                if (isinstance(n, ast.ImportFrom) and is_own(n.module, n.level))
                or (isinstance(n, ast.Import) and any(is_own(a.name) for a in n.names))
            ]
            found += [f"{n.lineno}: except ImportError around {ast.unparse(n)}" for n in own]
    return sorted(found, key=lambda line: int(line.split(":")[0]))


def test_the_lookup_check_tells_own_modules_from_extras():
    own = own_module_lookups(
        ast.parse(
            "import importlib\nimportlib.import_module('crossattn.attention')\n"
            "try:\n    from .maps import x\nexcept ImportError:\n    pass\n"
        )
    )
    assert [line.split(":")[0] for line in own] == ["2", "4"]
    extra = "import importlib.util\nimportlib.util.find_spec('tensorboard')\ntry:\n    import gradio\nexcept ImportError:\n    pass\n"
    assert own_module_lookups(ast.parse(extra)) == []


def test_no_importlib_or_import_error_fallbacks_for_own_modules():
    """The package's own modules are always there: importing them by name is plain ``import``."""
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name in LAZY_ENTRY_POINTS:
            continue
        lookups = own_module_lookups(ast.parse(path.read_text(encoding="utf-8")))
        if lookups:
            offenders[name] = lookups
    assert not offenders, offenders


def test_model_modules_do_not_import_training_outputs():
    graph = import_graph()
    bad = {m: sorted(graph[m] & TRAINING_OUTPUTS) for m in MODEL_MODULES if graph[m] & TRAINING_OUTPUTS}
    assert not bad, bad


#: part → parts (sub-packages or top-level modules) it must never import: the layers of the package
#: as each sub-package's ``__init__`` docstring states them
FORBIDDEN = {
    "attention": {"models", "training", "editing", "sampling", "evaluation", "commands", "web", "data"},
    "data": {"models", "training", "editing", "sampling", "evaluation", "commands", "web", "attention"},
    "models": {"training", "editing", "sampling", "evaluation", "commands", "web"},
    "editing": {"evaluation", "data", "commands", "web"},  # training: image_tuning fits with its LoRA and loss
    "training": {"editing", "sampling", "commands", "web"},
    "sampling": {"training", "editing", "commands", "web"},
    "evaluation": {"training", "editing", "sampling", "commands", "web"},
    "web": {"commands", "training"},
}
#: nothing in the package but the command line imports the commands
FORBIDDEN |= {p: FORBIDDEN.get(p, set()) | {"commands"} for p in ("config", "errors", "files", "viz")}


def part_of(module: str) -> str:
    """``crossattn.models.loading`` → ``models``; a top-level module is its own part (``config``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_each_part_keeps_to_its_layer():
    graph = import_graph()
    crossings = sorted(
        f"{a} -> {b}" for a, deps in graph.items() for b in deps if part_of(b) in FORBIDDEN.get(part_of(a), set())
    )
    assert not crossings, crossings


#: part pairs that still import each other, each with the change that will part them; the test fails when a
#: new pair appears and when one listed here is parted (then delete it from here)
BOTH_WAYS_PENDING: set[tuple[str, str]] = set()


def parts_importing_each_other(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """``{(A, B): ["a -> b", "b' -> a'", ...]}`` for every two parts A < B where a module of A imports one of
    B and a module of B imports one of A (counting imports inside functions)."""
    edges: dict[tuple[str, str], list[str]] = {}
    for a, deps in graph.items():
        for b in deps:
            if part_of(a) != part_of(b):
                edges.setdefault((part_of(a), part_of(b)), []).append(f"{a} -> {b}")
    return {(x, y): sorted(there + edges[(y, x)]) for (x, y), there in edges.items() if x < y and (y, x) in edges}


def test_parts_importing_each_other_are_found():
    graph = {"p.a.m": {"p.b.n"}, "p.b.n": set(), "p.b.o": {"p.a.m"}, "p.c.q": {"p.a.m"}}
    assert parts_importing_each_other(graph) == {("a", "b"): ["p.a.m -> p.b.n", "p.b.o -> p.a.m"]}


def test_no_two_parts_import_each_other():
    """Layers run one way: for each pair of parts, not both A → B and B → A."""
    both = parts_importing_each_other(import_graph())
    assert set(both) == BOTH_WAYS_PENDING, {pair: both.get(pair) for pair in set(both) ^ BOTH_WAYS_PENDING}


#: the sub-packages: ``ls src/crossattn`` shows each part
PARTS = ("models", "training", "editing", "sampling", "attention", "data", "evaluation", "commands", "web")


def test_the_top_level_shows_the_parts():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
    assert sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")) == sorted(PARTS)
    assert set(FORBIDDEN) >= set(PARTS) - {"commands"}, "each part but the command line has a row in FORBIDDEN"
    for package in PARTS:
        init = PACKAGE / package / "__init__.py"
        assert init.is_file() and len(ast.get_docstring(ast.parse(init.read_text())) or "") > 80, package
