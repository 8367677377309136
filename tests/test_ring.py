"""The ring shape (issue 7's new word): drawn with a visible hole, outside the default vocabulary,
recognised by the analyzer (hole check and template) without changing the other shapes' answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossattn.data.captions import ALL_SHAPES, COLOURS, SHAPES, parse_caption, vocabulary_with
from crossattn.data.shapes import (
    SHAPE_DRAWERS,
    ShapesDataset,
    coverage,
    export_image_folder,
    make_scene,
    scene_from_caption,
    scene_rng,
)
from crossattn.evaluation.analyzer import (
    analyze,
    blur_matrix,
    centre_hole_area,
    choose_shape,
    fit_shape,
    nearest_colour,
)
from crossattn.evaluation.checks import check_caption, score_single_object

WHITE = np.array([255.0, 255.0, 255.0])


def ring_scenes(n: int, kind: str | None = None, shapes=("ring",)):
    return [make_scene(scene_rng(11, i), 32, kind, shapes=shapes) for i in range(n)]


def test_ring_is_drawable_but_not_in_the_default_vocabulary():
    assert SHAPES == ("circle", "square", "triangle")
    assert tuple(SHAPE_DRAWERS) == ALL_SHAPES and "ring" in ALL_SHAPES
    assert all(o.shape != "ring" for i in range(200) for o in make_scene(scene_rng(0, i)).objects)
    with pytest.raises(ValueError, match="'ring' is not a shape.*outside this vocabulary.*shapes: circle, square"):
        parse_caption("a red ring")
    assert parse_caption("a red ring at the top left", shapes=ALL_SHAPES).objects == [("red", "ring")]
    with pytest.raises(ValueError, match="unknown shape\\(s\\) hexagon; accepted: circle, square, triangle, ring"):
        ShapesDataset(4, shapes=("hexagon",))
    assert vocabulary_with(("ring",)) == ALL_SHAPES and vocabulary_with(("square",)) == SHAPES


def test_ring_has_a_visible_hole_and_its_mask_is_the_drawn_pixels():
    """The hole (≥ 7 px at 32×32) is white, outside the mask; in-mask pixels are the ring's colour."""
    for scene in ring_scenes(40):
        for obj in scene.objects:
            assert centre_hole_area(obj.mask, obj.centroid) >= 7
            cx, cy = (int(c) for c in obj.centroid)
            assert np.linalg.norm(scene.image[cy, cx] - WHITE) < 1.0, "the centre of a ring is paper"
            assert not obj.mask[cy, cx]
            inside = scene.image[obj.mask].astype(float)  # (N, 3)
            colour = np.array(COLOURS[obj.colour], float)
            assert (np.linalg.norm(inside - colour, axis=1) < np.linalg.norm(inside - WHITE, axis=1) + 2).all()
        covered = np.any([o.mask for o in scene.objects], axis=0)
        outside = scene.image[~covered].astype(float)
        colours = np.array([COLOURS[o.colour] for o in scene.objects], float)  # (K, 3)
        nearest_object = np.linalg.norm(outside[:, None] - colours[None], axis=2).min(axis=1)
        assert (np.linalg.norm(outside - WHITE, axis=1) <= nearest_object + 2).all()


def test_ring_mask_is_half_coverage():
    cov = coverage("ring", (16.0, 16.0), 5.0, 32)
    scene = scene_from_caption("a blue ring", np.random.default_rng(0))
    assert scene.objects[0].shape == "ring"
    assert cov[16, 16] == 0.0 and cov[16, 12] == 1.0  # hole at the centre, band at 4 px out
    assert 0.7 < cov.sum() / (np.pi * 25 * 0.75) < 1.3


def test_export_ring_folder(tmp_path):
    out = export_image_folder(tmp_path / "rings", 6, kind="one", shapes=("ring",))
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and len(list(out.glob("*.png"))) == 6
    assert all(parse_caption(r["text"], ALL_SHAPES).objects[0][1] == "ring" for r in lines)
    assert all(r["text"] == f"a {r['text'].split()[1]} ring" for r in lines)


def test_export_ring_folder_with_prior_scenes(tmp_path, capsys):
    from crossattn.cli import main

    out = export_image_folder(tmp_path / "mixed", 4, kind="one", shapes=("ring",), prior=3)
    shapes = [json.loads(line)["text"].split()[2] for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert shapes[:4] == ["ring"] * 4 and len(shapes) == 7
    assert all(s in ("circle", "square", "triangle") for s in shapes[4:])
    argv = ["export", "scenes", str(tmp_path / "cli"), "--n", "2", "--shapes", "ring", "--kind", "one"]
    assert main([*argv, "--prior", "1"]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    circles = export_image_folder(
        tmp_path / "circles", 2, kind="one", shapes=("ring",), prior=5, prior_shapes=("circle",)
    )
    texts = [json.loads(line)["text"] for line in (circles / "metadata.jsonl").read_text().splitlines()]
    assert [t.split()[2] for t in texts] == ["ring"] * 2 + ["circle"] * 5
    assert main([*argv[:2], str(tmp_path / "cli2"), *argv[3:], "--prior", "1", "--prior-shapes", "circle"]) == 0
    with pytest.raises(ValueError, match="prior must be >= 0"):
        export_image_folder(tmp_path / "bad", 2, prior=-1)


def test_analyzer_finds_rings_in_every_scene_kind():
    for scene in ring_scenes(24) + ring_scenes(8, shapes=ALL_SHAPES):
        found = analyze(scene.image, shapes=ALL_SHAPES)
        assert sorted((o.colour, o.shape) for o in found) == sorted((o.colour, o.shape) for o in scene.objects)
        assert check_caption(scene.image, scene.caption, shapes=ALL_SHAPES).passed
        assert all(o.hole_area >= 7 for o in found if o.shape == "ring")


def test_analyzer_still_finds_the_three_shapes_with_ring_in_the_vocabulary():
    for i in range(30):
        scene = make_scene(scene_rng(5, i))
        truth = sorted((o.colour, o.shape) for o in scene.objects)
        assert sorted((o.colour, o.shape) for o in analyze(scene.image, shapes=ALL_SHAPES)) == truth
        assert sorted((o.colour, o.shape) for o in analyze(scene.image)) == truth
        assert all(o.hole_area == 0 for o in analyze(scene.image))


def test_ring_template_fits_and_the_centred_hole_decides():
    """The ring template fits a ring best; but ring or not is decided by a hole around the centroid:
    a blob with specks of paper away from its centre is not a ring, a ring blurred with
    σ = 1.5 px still is one, of its colour."""
    scene = scene_from_caption("a green ring", np.random.default_rng(3))
    obj = scene.objects[0]
    errors = fit_shape(coverage("ring", obj.centroid, obj.size, 32), obj.centroid, ALL_SHAPES)
    assert min(errors, key=errors.get) == "ring" and errors["ring"] < 0.5 * errors["circle"]
    assert choose_shape({"circle": 0.3, "ring": 0.1}, hole_area=9, min_hole=3) == "ring"
    assert choose_shape({"circle": 0.1, "ring": 0.3}, hole_area=9, min_hole=3) == "ring"
    assert choose_shape({"circle": 0.3, "ring": 0.1}, hole_area=2, min_hole=3) == "circle"
    assert choose_shape({"circle": 0.1, "square": 0.3}, hole_area=9, min_hole=3) == "circle"
    blob = np.full((32, 32, 3), 255, np.uint8)
    blob[4:28, 4:28] = COLOURS["red"]
    blob[6:8, 6:8] = blob[24:26, 20:23] = 255  # paper specks, far from the centre
    (found,) = analyze(blob, shapes=ALL_SHAPES)
    assert found.shape == "square" and found.hole_area == 0
    b = blur_matrix(32, 1.5)
    blurred = np.stack([b @ scene.image[..., k].astype(float) @ b.T for k in range(3)], axis=-1)  # (H, W, 3)
    (found,) = analyze(np.clip(np.rint(blurred), 0, 255).astype(np.uint8), shapes=ALL_SHAPES)
    assert (found.shape, found.colour) == ("ring", "green")


def test_colour_of_a_lightened_band_is_its_palette_colour():
    """A thin band blurred to 60 % blue over white is nearer purple than blue as a point, but on
    blue's blend line."""
    light_blue = 0.6 * np.array(COLOURS["blue"], np.float32) + 0.4 * WHITE
    assert nearest_colour(light_blue.astype(np.float32))[0] == "blue"
    for name, rgb in COLOURS.items():
        assert nearest_colour(np.array(rgb, np.float32)) == (name, 0.0)


def test_score_single_object():
    rings = np.stack([scene_from_caption("a red ring", np.random.default_rng(i)).image for i in range(4)])
    circles = np.stack([scene_from_caption("a red circle", np.random.default_rng(i)).image for i in range(2)])
    two = scene_from_caption("a red ring and a blue square", np.random.default_rng(0), noise=0).image[None]
    assert score_single_object(rings, "red", "ring") == {
        "count": 1.0,
        "shape": 1.0,
        "colour": 1.0,
        "object": 1.0,
        "n": 4,
    }
    assert score_single_object(circles, "red", "ring")["shape"] == 0.0  # a disc is a circle, not a ring
    assert score_single_object(rings, "blue", "ring")["colour"] == 0.0
    mixed = score_single_object(np.concatenate([rings[:2], two]), "red", "ring")
    assert mixed["shape"] == pytest.approx(2 / 3) and mixed["count"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no images"):
        score_single_object(rings[:0], "red", "ring")


def test_export_command_writes_ring_folder_and_refuses_bad_input(tmp_path, capsys):
    from crossattn.cli import main

    out = tmp_path / "rings"
    assert main(["export", "scenes", str(out), "--shapes", "ring", "--kind", "one", "--n", "3"]) == 0
    texts = [json.loads(line)["text"] for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(texts) == 3 and all(t.endswith(" ring") and len(t.split()) == 3 for t in texts)
    assert main(["export", "scenes", str(out), "--shapes", "ring"]) == 2  # not over a folder with files
    assert main(["export", "scenes", str(tmp_path / "x"), "--shapes", "hexagon"]) == 2
    assert main(["export", "scenes", str(tmp_path / "y"), "--kind", "three"]) == 2
    err = capsys.readouterr().err
    assert "will not overwrite" in err and "accepted: circle, square, triangle, ring" in err and "kinds: one" in err
