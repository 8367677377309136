"""Is an edit a colour edit? Its changed words, each side a colour's name (issue 41: such an edit of a given
image is a recolouring by default, :mod:`crossattn.editing.recolour`).

The names are matplotlib's (``matplotlib.colors``): the 148 CSS4 colours ("red", "darkred", "grey") and the
949 of the XKCD colour survey ("sky blue", "dark green"), so a user's colour word is read as matplotlib reads
it, not from a list of our own. A phrase is a colour when it is one name, with or without its spaces ("dark
red" is CSS4's "darkred"), or each of its words is one ("red and blue"'s words are not all colours: "and").
The words are compared word by word, lower case, without the articles "a" and "an" (so "an orange circle" →
"a yellow circle" changes one word, not two; ``difflib``), torch-free.
"""

from __future__ import annotations

import difflib
import re

WORD = re.compile(r"[a-z]+")
ARTICLES = frozenset({"a", "an"})


def words_of(phrase: str) -> list[str]:
    """The words of ``phrase``, lower case, the articles left out."""
    return [w for w in WORD.findall(phrase.lower()) if w not in ARTICLES]


def colour_rgb(phrase: str) -> tuple[float, float, float] | None:
    """The RGB (each in [0, 1]) matplotlib gives the colour ``phrase`` names as a whole, its articles left out:
    the words as written (CSS4's, else XKCD's: "dark red" is XKCD's), else without their spaces ("darkred",
    CSS4's), or None when it names none."""
    from matplotlib.colors import CSS4_COLORS, XKCD_COLORS, to_rgb

    words = words_of(phrase)
    for name in (" ".join(words), "".join(words)):
        if name in CSS4_COLORS:
            return to_rgb(CSS4_COLORS[name])
        if f"xkcd:{name}" in XKCD_COLORS:
            return to_rgb(XKCD_COLORS[f"xkcd:{name}"])
    return None


def is_colour(phrase: str) -> bool:
    """Whether ``phrase`` (one or more words, articles aside) names a colour: as a whole (:func:`colour_rgb`) or
    word by word."""
    words = words_of(phrase)
    return bool(words) and (colour_rgb(phrase) is not None or all(colour_rgb(w) is not None for w in words))


def changed_phrases(source: str, target: str) -> list[tuple[str, str]]:
    """The ``(source words, target words)`` that differ between two prompts, word by word, lower case, the
    articles left out."""
    a, b = words_of(source), words_of(target)
    blocks = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    return [(" ".join(a[i0:i1]), " ".join(b[j0:j1])) for tag, i0, i1, j0, j1 in blocks if tag != "equal"]


def colour_edit(source: str, target: str) -> bool:
    """Whether ``target`` changes ``source`` in colours only: some words differ, and each changed pair is a
    colour's name on both sides ("a red circle" → "a blue circle", not "a red circle" → "a red square" nor
    "a circle" → "a red circle")."""
    changed = changed_phrases(source, target)
    return bool(changed) and all(s and t and is_colour(s) and is_colour(t) for s, t in changed)
