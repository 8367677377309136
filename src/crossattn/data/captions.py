"""The scenes' caption grammar: vocabulary, parsing, and the geometric rules each word promises.

Kept apart from the drawing code because evaluation uses the same grammar and rules to check a
generated image: what a caption means is decided once, here.

Coordinates are pixels, x to the right and y down; pixel (row i, column j) covers
``[j, j + 1) × [i, i + 1)``, so its centre is ``(j + 0.5, i + 0.5)`` and the image middle is
``resolution / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the palette, RGB 0–255 (other tools depend on these exact values)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 47),
    "orange": (240, 130, 30),
    "yellow": (235, 200, 40),
    "green": (60, 170, 70),
    "blue": (40, 90, 220),
    "purple": (140, 70, 190),
}
SHAPES = ("circle", "square", "triangle")  # the default model's shape words
#: shapes the scenes module can also draw, outside the default vocabulary: fine-tuning examples
#: (issue 7) teach them; pass ``shapes=ALL_SHAPES`` (or a subset) to draw, parse or analyse them
EXTRA_SHAPES = ("ring",)
ALL_SHAPES = SHAPES + EXTRA_SHAPES
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
RELATIONS = ("left of", "right of", "above", "below", "and")
KINDS = ("one", "one_position", "two_relation", "two_and")
#: counting (issue 40): "two red circles" and "two red circles and a blue square"; "a" stays one.
#: Opt-in kinds, outside ``KINDS`` so every existing mix (four shares) keeps its meaning.
NUMBERS = {"two": 2, "three": 3, "four": 4}
COUNT_KINDS = ("count", "count_and")
#: the articles that start an object ("an" before a vowel when formatting; either accepted when parsing)
ARTICLES = ("a", "an")
BACKGROUND = (255, 255, 255)


def margin_for(resolution: int) -> float:
    """The grammar's distance: 1/8 of the side (from the middle lines, between two centroids)."""
    return resolution / 8


@dataclass
class CaptionSpec:
    """What a caption asks for: one or two (colour, shape) objects, a position or a relation.

    ``count`` > 1 makes the first object a counted group of that many (``"two red circles"``), alone
    or beside one second object (``"... and a blue square"``, relation ``"and"``)."""

    objects: list[tuple[str, str]]
    position: str | None = None
    relation: str | None = None
    words: list[str] = field(default_factory=list)
    count: int = 1

    @property
    def kind(self) -> str:
        if self.count > 1:
            return "count_and" if len(self.objects) == 2 else "count"
        if len(self.objects) == 1:
            return "one_position" if self.position else "one"
        return "two_and" if self.relation == "and" else "two_relation"

    def object_words(self) -> list[tuple[int, int, str]]:
        """``(word index in caption.split(), object index, "colour" | "shape")`` for each object word
        (a counted group's words are object 0's; its number word is :meth:`number_word`)."""
        starts = [0] if len(self.objects) == 1 else [0, 3 + len((self.relation or "and").split())]
        return [(s + 1 + k, i, kind) for i, s in enumerate(starts) for k, kind in enumerate(("colour", "shape"))]

    def number_word(self) -> int | None:
        """The number word's index in ``caption.split()`` (0), or None when the caption counts nothing."""
        return 0 if self.count > 1 else None

    def instances(self) -> list[tuple[str, str]]:
        """Every object to draw, in caption order: the counted group's ``count`` copies, then the rest."""
        return [self.objects[0]] * self.count + list(self.objects[1:])


def format_caption(
    objects: list[tuple[str, str]], position: str | None = None, relation: str | None = None, count: int = 1
) -> str:
    """The caption for a layout, e.g. ``"a red circle left of a blue square"``; ``count`` > 1 counts the
    first object (``"two red circles and a blue square"``: the shape's plural, relation ``and`` only)."""
    first = f"{article(objects[0][0])} {objects[0][0]} {objects[0][1]}"
    if count > 1:
        first = f"{number_name(count)} {objects[0][0]} {plural(objects[0][1])}"
    if len(objects) == 1:
        return f"{first} at the {position}" if position else first
    return f"{first} {relation} {article(objects[1][0])} {objects[1][0]} {objects[1][1]}"


def article(colour: str) -> str:
    """English's article before a colour word: ``"an"`` before a vowel sound (orange), ``"a"`` otherwise.

    Parsing accepts either before any colour ("a orange circle" is how captions read before issue 42);
    the shipped model's ``an`` token shares the row of ``a`` (``scripts/alias_token_rows.py``)."""
    return "an" if colour[:1] in "aeiou" else "a"


def plural(shape: str) -> str:
    """The shape word's plural: every shape of the grammar takes an -s (circles, squares, triangles, rings)."""
    return f"{shape}s"


def counting_words(shapes: tuple[str, ...] = SHAPES) -> set[str]:
    """The words counting captions add to the grammar: the numbers and the shapes' plurals."""
    return set(NUMBERS) | {plural(s) for s in shapes}


def number_name(count: int) -> str:
    """``2`` → ``"two"``; a ``ValueError`` naming the numbers the grammar has otherwise."""
    names = {v: k for k, v in NUMBERS.items()}
    if count not in names:
        raise ValueError(f"count {count} is outside the grammar; counts: {', '.join(map(str, names))}")
    return names[count]


def vocabulary_text(shapes: tuple[str, ...] = SHAPES) -> str:
    """One line naming every accepted form and word (used in error messages)."""
    return (
        "captions are 'a COLOUR SHAPE', 'a COLOUR SHAPE at the POSITION', 'a COLOUR SHAPE RELATION a COLOUR SHAPE', "
        "'NUMBER COLOUR SHAPEs' or 'NUMBER COLOUR SHAPEs and a COLOUR SHAPE'; "
        f"numbers: {', '.join(NUMBERS)}; colours: {', '.join(COLOURS)}; shapes: {', '.join(shapes)}; positions: {', '.join(POSITIONS)}; "
        f"relations: {', '.join(RELATIONS)}; 'an' may stand for 'a' (before orange)"
    )


def check_shapes(shapes: tuple[str, ...]) -> tuple[str, ...]:
    """``shapes`` itself when it is a non-empty tuple of drawable shapes; a ``ValueError`` otherwise."""
    if isinstance(shapes, str) or not shapes:
        raise ValueError(
            f"shapes must be a non-empty tuple of shape names, got {shapes!r}; accepted: {', '.join(ALL_SHAPES)}"
        )
    unknown = [s for s in shapes if s not in ALL_SHAPES]
    if unknown:
        raise ValueError(f"unknown shape(s) {', '.join(map(str, unknown))}; accepted: {', '.join(ALL_SHAPES)}")
    return tuple(shapes)


def vocabulary_with(shapes: tuple[str, ...]) -> tuple[str, ...]:
    """The default shapes plus any of ``shapes`` outside them (e.g. ``("ring",)`` → all four):
    what an analyzer should choose among when those shapes may appear."""
    return SHAPES + tuple(s for s in check_shapes(shapes) if s not in SHAPES)


def _object_at(
    words: list[str], start: int, caption: str, shapes: tuple[str, ...], counted: bool = False
) -> tuple[str, str]:
    """The (colour, shape) of ``a COLOUR SHAPE`` at ``start`` (``counted``: ``NUMBER COLOUR SHAPEs``)."""
    article_ok = words[start] in NUMBERS if counted else words[start] in ARTICLES
    if len(words) < start + 3 or not article_ok:
        raise ValueError(f"caption {caption!r} does not fit the scenes grammar; {vocabulary_text(shapes)}")
    colour, shape = words[start + 1], words[start + 2]
    if counted:
        if not shape.endswith("s"):
            raise ValueError(f"caption {caption!r}: {shape!r} after a number must be plural; {vocabulary_text(shapes)}")
        shape = shape[:-1]
    if colour not in COLOURS:
        raise ValueError(f"caption {caption!r}: {colour!r} is not a colour; {vocabulary_text(shapes)}")
    if shape not in shapes:
        hint = f" ({shape!r} is drawable but outside this vocabulary)" if shape in ALL_SHAPES else ""
        raise ValueError(f"caption {caption!r}: {shape!r} is not a shape{hint}; {vocabulary_text(shapes)}")
    return colour, shape


def parse_caption(caption: str, shapes: tuple[str, ...] = SHAPES) -> CaptionSpec:
    """Parse a caption of the scenes grammar; a ``ValueError`` naming the vocabulary otherwise."""
    words = caption.split()
    if words and words[0] in NUMBERS:
        return _parse_counted(words, caption, shapes)
    first = _object_at(words, 0, caption, shapes)
    rest = words[3:]
    if not rest:
        return CaptionSpec([first], words=words)
    if rest[:2] == ["at", "the"] and " ".join(rest[2:]) in POSITIONS:
        return CaptionSpec([first], position=" ".join(rest[2:]), words=words)
    for relation in RELATIONS:
        n = len(relation.split())
        if " ".join(rest[:n]) == relation and len(rest) == n + 3:
            second = _object_at(words, 3 + n, caption, shapes)
            return CaptionSpec([first, second], relation=relation, words=words)
    raise ValueError(f"caption {caption!r} does not fit the scenes grammar; {vocabulary_text(shapes)}")


def _parse_counted(words: list[str], caption: str, shapes: tuple[str, ...]) -> CaptionSpec:
    """``NUMBER COLOUR SHAPEs`` alone or ``... and a COLOUR SHAPE`` (another object than the group's)."""
    group = _object_at(words, 0, caption, shapes, counted=True)
    count = NUMBERS[words[0]]
    if len(words) == 3:
        return CaptionSpec([group], words=words, count=count)
    if len(words) == 7 and words[3] == "and":
        single = _object_at(words, 4, caption, shapes)
        if single == group:
            raise ValueError(f"caption {caption!r}: the single object must differ from the group in colour or shape")
        return CaptionSpec([group, single], relation="and", words=words, count=count)
    raise ValueError(f"caption {caption!r} does not fit the scenes grammar; {vocabulary_text(shapes)}")


def satisfies_position(centroid: tuple[float, float], position: str, resolution: int, slack: float = 0.0) -> bool:
    """Quadrant words: centroid in that quadrant, ≥ 1/8 side from both middle lines;
    ``center``: within 1/8 side of the middle on both axes. ``slack`` (pixels) loosens both."""
    if position not in POSITIONS:
        raise ValueError(f"unknown position {position!r}; positions: {', '.join(POSITIONS)}")
    dx, dy = centroid[0] - resolution / 2, centroid[1] - resolution / 2
    m = margin_for(resolution)
    if position == "center":
        return abs(dx) <= m + slack and abs(dy) <= m + slack
    vertical, horizontal = position.split()
    sy = -dy if vertical == "top" else dy
    sx = -dx if horizontal == "left" else dx
    return sx >= m - slack and sy >= m - slack


def satisfies_relation(
    first: tuple[float, float], second: tuple[float, float], relation: str, resolution: int, slack: float = 0.0
) -> bool:
    """``first RELATION second``: the first centroid ≥ 1/8 side further in that direction, that axis
    dominating; ``and`` holds always. ``slack`` (pixels) loosens both conditions (negative: tightens)."""
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; relations: {', '.join(RELATIONS)}")
    if relation == "and":
        return True
    dx, dy = first[0] - second[0], first[1] - second[1]
    along, across = {
        "left of": (-dx, dy),
        "right of": (dx, dy),
        "above": (-dy, dx),
        "below": (dy, dx),
    }[relation]
    return along >= margin_for(resolution) - slack and along > abs(across) - slack
