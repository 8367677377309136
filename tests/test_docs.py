"""The README and the docs site, checked without building it (CI runs ``mkdocs build --strict``).

The README stays a short reference with the set-up and test commands on top; every local link and
image of the README and of ``docs/`` points at a file that exists; every public name of
``crossattn.__all__`` is documented on the API pages, at the module that defines it.
"""

from __future__ import annotations

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
