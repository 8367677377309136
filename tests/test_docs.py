"""The README and the docs site, checked without building it (CI runs ``mkdocs build --strict``).

The README stays a short reference with the set-up and test commands on top; every local link and
image of the README and of ``docs/`` points at a file that exists; every table is one table; every
public name of ``crossattn.__all__`` is documented on the API pages, at the module that defines it;
every docstring cross-reference to ``crossattn`` in ``src/`` names an object that exists.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import crossattn

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SETUP = 'pip install torch==2.13.0 && pip install -e ".[dev]" && crossattn generate "a red circle left of a blue square" --upscale 8'

# [text](target) and ![alt](target), with an optional "title"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
DIRECTIVE = re.compile(r"^:::\s*(\S+)[ \t]*\n((?:[ \t]+\S.*\n?)*)", re.M)


# :class:`crossattn.x.Y`, :func:`~crossattn.y`, :mod:`.sibling` (Sphinx roles in docstrings)
CROSS_REFERENCE = re.compile(r":(?:class|func|meth|attr|data|exc|obj|mod):`~?((?:crossattn)?\.?[\w.]+)`")
TABLE_DELIMITER = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def local_links(path: Path) -> list[str]:
    targets = LINK.findall(prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", t)]


def directives() -> dict[str, list[str]]:
    """``::: target`` of every docs page → the names its ``members:`` option lists."""
    found = {}
    for page in DOCS.rglob("*.md"):
        for target, options in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            members = re.search(r"members:\s*\[([^\]]*)\]", options)
            found[target] = [m.strip(" '\"") for m in members.group(1).split(",")] if members else []
    return found


def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    top = text[: text.index("---")]
    assert SETUP in top
    assert "```bash\npython -m pytest\n```" in top


def test_readme_names_every_public_name_and_notebook():
    text = README.read_text(encoding="utf-8")
    names = text[text.index("The\npublic names:") : text.index("Reference: [docs/api.md]")]
    assert not [n for n in crossattn.__all__ if n != "__version__" and f"`{n}`" not in names]
    notebooks = text[text.index("## Notebooks") :].split("\n## ")[0]
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert re.search(rf"\b{notebook.name[:2]}\s", notebooks), f"README's notebook list lacks {notebook.name}"


def test_local_links_and_images_exist():
    broken = []
    for path in markdown_files():
        for target in local_links(path):
            file = target.split("#", 1)[0]
            if file and not (path.parent / file).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_links_are_found():
    assert "docs/api.md" in local_links(README)
    assert "docs/serve.png" in local_links(README)


def test_every_public_name_is_documented_at_its_module():
    documented = directives()
    exports = crossattn._EXPORTS  # public name → defining module, the one table of module paths
    missing = []
    for name in crossattn.__all__:
        if name in exports:
            if f"crossattn.{exports[name]}.{name}" not in documented:
                missing.append(f"::: crossattn.{exports[name]}.{name}")
        elif not any(name in members for members in documented.values()):
            missing.append(f"{name} in a `members:` list")
    assert not missing, "docs/api.md lacks:\n" + "\n".join(missing)


def test_api_directives_point_at_existing_modules():
    """A ``:::`` path names a module file under ``src/`` (and, after it, names defined in it)."""
    src = ROOT / "src"
    stale = []
    for target in directives():
        parts = target.split(".")
        modules = [parts[:i] for i in range(len(parts), 0, -1)]
        found = next((m for m in modules if (src / Path(*m)).with_suffix(".py").exists()), None)
        found = found or next((m for m in modules if (src / Path(*m) / "__init__.py").exists()), None)
        if found is None:
            stale.append(target)
            continue
        rest = parts[len(found) :]
        file = (src / Path(*found)).with_suffix(".py")
        file = file if file.exists() else src / Path(*found) / "__init__.py"
        if rest and not re.search(rf"^(class|def) {rest[0]}\b|^{rest[0]}\s*[:=]", file.read_text(), re.M):
            stale.append(target)
    assert not stale, "docs ::: paths that no longer exist:\n" + "\n".join(stale)


def test_model_card_is_shipped_with_the_model():
    card = (DOCS / "model-card.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "\nlicense:" in card.split("\n---\n")[0]
    assert (ROOT / "src" / "crossattn" / "pretrained" / "README.md").read_text(encoding="utf-8") == card


def test_every_table_starts_with_its_header():
    """A blank line inside a table splits it: the rows after it render as a paragraph of pipes."""
    split = []
    for path in markdown_files():
        lines = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text(encoding="utf-8")).splitlines()
        for i, line in enumerate(lines):
            starts_table = line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
            if starts_table and not TABLE_DELIMITER.match(lines[i + 1] if i + 1 < len(lines) else ""):
                split.append(f"{path.relative_to(ROOT)}:{i + 1}: {line[:60]}")
    assert not split, "table rows without a header (a blank line splitting a table?):\n" + "\n".join(split)


def resolve(dotted: str) -> object:
    """The object ``dotted`` names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as error:
            if not ".".join(parts[:i]).startswith(str(error.name)):
                raise  # the module exists but fails to import
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def docstring_cross_references() -> list[tuple[str, str]]:
    """``(file, dotted path)`` of every ``crossattn...`` or relative role target in ``src/crossattn``."""
    src = ROOT / "src"
    found = []
    for file in sorted((src / "crossattn").rglob("*.py")):
        module = ".".join(file.relative_to(src).with_suffix("").parts)
        package = module.removesuffix(".__init__") if file.name == "__init__.py" else module.rpartition(".")[0]
        for target in CROSS_REFERENCE.findall(file.read_text(encoding="utf-8")):
            if target.startswith("crossattn.") or target == "crossattn":
                found.append((str(file.relative_to(ROOT)), target))
            elif target.startswith("."):
                found.append((str(file.relative_to(ROOT)), package + target))
    return found


def test_cross_references_are_found():
    targets = {target for _, target in docstring_cross_references()}
    assert {"crossattn.trace", "crossattn.editing.control.Controller", "crossattn.training.train"} <= targets


def test_docstring_cross_references_resolve():
    """``:class:`crossattn.X``` and friends name a real object (imported, then ``getattr``), as does
    every public name of ``crossattn``, lazily re-exported."""
    missing = []
    for name in crossattn.__all__:
        try:
            getattr(crossattn, name)
        except AttributeError as error:
            missing.append(f"crossattn.{name}: {error}")
    for file, target in docstring_cross_references():
        try:
            resolve(target)
        except (ImportError, AttributeError) as error:
            missing.append(f"{file}: {target} ({type(error).__name__}: {error})")
    assert not missing, "cross-references to nothing:\n" + "\n".join(missing)
