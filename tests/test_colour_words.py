"""Which edits are colour edits (issue 41: a colour edit of a given image is a recolouring by default)."""

from __future__ import annotations

import pytest

from crossattn.editing.colour_words import changed_phrases, colour_edit, colour_rgb, is_colour


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("a red circle", "a blue circle", True),
        ("an orange circle", "a yellow circle", True),  # the article follows the colour: not a second change
        ("a green square above a red triangle", "a green square above a purple triangle", True),
        ("a red circle left of a blue square", "a green circle left of a yellow square", True),  # two colours
        ("a photo of a red car", "a photo of a sky blue car", True),  # an XKCD name of two words
        ("a red circle", "a darkred circle", True),  # CSS4
        ("a red circle", "a red square", False),  # a shape
        ("a red circle", "an orange square", False),  # a colour and a shape
        ("a circle", "a red circle", False),  # a colour added: no colour to swap
        ("a red circle", "a red circle", False),  # nothing changed
        ("a red circle above a blue square", "a red circle below a blue square", False),  # a relation
    ],
)
def test_colour_edit_is_every_changed_pair_a_colour_on_both_sides(source, target, expected):
    assert colour_edit(source, target) is expected


def test_colour_names_are_matplotlibs_whole_without_spaces_or_word_by_word():
    assert is_colour("Red") and is_colour("dark red") and is_colour("sky blue") and is_colour("red blue")
    assert not is_colour("square") and not is_colour("red square") and not is_colour("") and not is_colour("a")


def test_changed_phrases_are_word_blocks_without_articles():
    assert changed_phrases("an orange circle above a square", "a yellow circle below a square") == [
        ("orange", "yellow"),
        ("above", "below"),
    ]


def test_colour_rgb_is_matplotlibs_for_a_whole_name_else_none():
    assert colour_rgb("an orange") == (1.0, 165 / 255, 0.0)  # CSS4's orange, the article left out
    assert colour_rgb("darkred") == (139 / 255, 0.0, 0.0) and colour_rgb("sky blue") is not None  # CSS4, XKCD
    assert colour_rgb("square") is None and colour_rgb("red blue") is None  # a colour's name only, as a whole
