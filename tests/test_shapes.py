"""Scenes: every caption word matches the drawn scene, masks cover exactly the drawn pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.data.captions import parse_caption, satisfies_position, satisfies_relation
from crossattn.data.shapes import (
    COLOURS,
    KINDS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    ShapesDataset,
    export_image_folder,
    make_scene,
    scene_from_caption,
    scene_rng,
)

WHITE = np.array([255.0, 255.0, 255.0])
TIE = 2.0  # a pixel exactly half covered is equidistant; rounding to uint8 moves it by < sqrt(3)/2 each way


def scenes(n: int = 120, resolution: int = 32, kind: str | None = None):
    return [make_scene(scene_rng(7, i), resolution, kind) for i in range(n)]


def nearest(pixel: np.ndarray, colours: list[np.ndarray]) -> int:
    return int(np.argmin([np.linalg.norm(pixel - c) for c in colours]))


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_masks_cover_exactly_the_drawn_pixels(resolution):
    """Inside an object's mask its colour is nearer than white; outside every mask white is nearest."""
    for scene in scenes(60, resolution):
        image = scene.image.astype(float)
        covered = np.zeros(image.shape[:2], bool)
        for obj in scene.objects:
            colour = np.array(COLOURS[obj.colour], float)
            inside = image[obj.mask]  # (N, 3)
            assert inside.shape[0] > 0
            assert (np.linalg.norm(inside - colour, axis=1) <= np.linalg.norm(inside - WHITE, axis=1) + TIE).all()
            assert not (covered & obj.mask).any(), "objects overlap"
            covered |= obj.mask
        outside = image[~covered]
        palette = np.array([COLOURS[o.colour] for o in scene.objects], float)  # (K, 3)
        d_white = np.linalg.norm(outside - WHITE, axis=1)
        d_obj = np.linalg.norm(outside[:, None] - palette[None], axis=2).min(axis=1)
        assert (d_white <= d_obj + TIE).all()


def test_caption_words_match_the_scene():
    """Colour and shape words name the drawn objects; position and relation rules hold on the masks."""
    for scene in scenes(300):
        spec = parse_caption(scene.caption)
        assert spec.kind == scene.kind
        assert [(o.colour, o.shape) for o in scene.objects] == spec.objects
        for obj in scene.objects:  # the mask's pixels are (mostly pure) that colour
            core = scene.image[obj.mask].astype(float).mean(axis=0)
            assert nearest(core, [np.array(c) for c in COLOURS.values()]) == list(COLOURS).index(obj.colour)
        if spec.position:
            assert satisfies_position(scene.objects[0].centroid, spec.position, 32)
        if spec.relation:
            a, b = (o.centroid for o in scene.objects)
            assert satisfies_relation(a, b, spec.relation, 32)
            assert (
                scene.objects[0].colour != scene.objects[1].colour or scene.objects[0].shape != scene.objects[1].shape
            )
        words = scene.caption.split()
        for index, mask in scene.word_masks.items():
            obj = next(o for o in scene.objects if o.mask is mask)
            assert words[index] in (obj.colour, obj.shape)
        assert len(scene.word_masks) == 2 * len(scene.objects)


def test_shapes_differ_in_geometry():
    """Circle, square, triangle fill different fractions of their bounding box (π/4, 1, 1/2)."""
    fill = {s: [] for s in SHAPES}
    for i in range(60):
        scene = make_scene(scene_rng(1, i), 64, "one")
        mask = scene.objects[0].mask
        ys, xs = np.nonzero(mask)
        fill[scene.objects[0].shape].append(mask.sum() / ((np.ptp(xs) + 1) * (np.ptp(ys) + 1)))
    assert 0.7 < np.mean(fill["circle"]) < 0.85
    assert np.mean(fill["square"]) > 0.95
    assert 0.4 < np.mean(fill["triangle"]) < 0.62


def test_positions_follow_the_quadrant_rules():
    for position in POSITIONS:
        for i in range(20):
            scene = scene_from_caption(f"a red circle at the {position}", scene_rng(2, i))
            x, y = scene.objects[0].centroid
            if position == "center":
                assert abs(x - 16) <= 4 and abs(y - 16) <= 4
            else:
                assert (x <= 12) == ("left" in position) and (x >= 20) == ("right" in position)
                assert (y <= 12) == ("top" in position) and (y >= 20) == ("bottom" in position)


def test_relations_follow_the_direction_rules():
    expected = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}
    for relation, (sx, sy) in expected.items():
        for i in range(20):
            scene = scene_from_caption(f"a blue square {relation} a green triangle", scene_rng(3, i))
            (x1, y1), (x2, y2) = (o.centroid for o in scene.objects)
            dx, dy = x1 - x2, y1 - y2
            along, across = (sx * dx, dy) if sx else (sy * dy, dx)
            assert along >= 4 and along > abs(across)


def test_kind_mix_matches_the_training_recipe():
    kinds = [make_scene(scene_rng(4, i)).kind for i in range(1500)]
    frac = {k: kinds.count(k) / len(kinds) for k in KINDS}
    assert abs(frac["one"] + frac["one_position"] - 0.5) < 0.05
    assert abs(frac["one_position"] / (frac["one"] + frac["one_position"]) - 2 / 3) < 0.06
    assert abs(frac["two_and"] / (frac["two_and"] + frac["two_relation"]) - 0.2) < 0.05


def test_determinism_from_seed():
    a, b = make_scene(np.random.default_rng(5)), make_scene(np.random.default_rng(5))
    assert a.caption == b.caption and np.array_equal(a.image, b.image)
    ds = ShapesDataset(10, seed=3)
    assert torch.equal(ds[4]["pixel_values"], ShapesDataset(10, seed=3)[4]["pixel_values"])
    assert any(ds[i]["text"] != ShapesDataset(10, seed=4)[i]["text"] for i in range(10))


def test_dataset_items_are_tensors_in_range():
    ds = ShapesDataset(8, resolution=16, seed=0, noise=8 / 255)
    item = ds[0]
    assert item["pixel_values"].shape == (3, 16, 16) and item["pixel_values"].dtype == torch.float32
    assert item["pixel_values"].min() >= -1 and item["pixel_values"].max() <= 1
    assert isinstance(item["text"], str) and len(ds) == 8
    with pytest.raises(IndexError):
        ds[8]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 16, 16) and len(batch["text"]) == 4


def test_noise_changes_the_background_only_slightly():
    clean = make_scene(np.random.default_rng(9), kind="one")
    noisy = make_scene(np.random.default_rng(9), kind="one", noise=8 / 255)
    assert clean.caption == noisy.caption
    diff = noisy.image.astype(float) - clean.image.astype(float)
    assert 4 < diff.std() < 12


def test_scene_from_caption_and_bad_captions():
    scene = scene_from_caption("a purple triangle right of a yellow circle", np.random.default_rng(0))
    assert [(o.colour, o.shape) for o in scene.objects] == [("purple", "triangle"), ("yellow", "circle")]
    assert set(scene.word_masks) == {1, 2, 6, 7}
    for bad, named in [
        ("a pink circle", "colours: red"),
        ("a red star", "shapes: circle"),
        ("five red circles", "captions are"),
        ("two red circle", "must be plural"),
        ("two red circles at the top left", "captions are"),
    ]:
        with pytest.raises(ValueError, match=named):
            scene_from_caption(bad, np.random.default_rng(0))
    with pytest.raises(ValueError, match="differ"):
        scene_from_caption("a red circle and a red circle", np.random.default_rng(0))
    assert set(RELATIONS) == {"left of", "right of", "above", "below", "and"}


def test_export_round_trip(tmp_path):
    out = export_image_folder(tmp_path / "scenes", 6, seed=2, resolution=16)
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    masks = np.load(out / "masks.npz")
    ds = ShapesDataset(6, resolution=16, seed=2)
    for i, line in enumerate(lines):
        scene = ds.scene(i)
        assert line["text"] == scene.caption
        assert np.array_equal(np.asarray(Image.open(out / line["file_name"])), scene.image)
        assert np.array_equal(masks[line["file_name"]], np.stack([o.mask for o in scene.objects]))
    with pytest.raises(FileExistsError):
        export_image_folder(out, 2)
    assert len(list(out.iterdir())) == 8


def test_render_speed_is_far_above_training_needs():
    import time

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(200):
        make_scene(rng)
    assert 200 / (time.perf_counter() - start) > 200  # training consumes ~20 samples/s


def test_position_masks_put_the_object_under_its_position_words():
    plain = ShapesDataset(8, with_masks=True, kind="one_position")
    placed = ShapesDataset(8, with_masks=True, kind="one_position", position_masks=True)
    for i in range(8):
        a, b, scene = plain[i]["word_masks"], placed[i]["word_masks"], placed.scene(i)
        n = len(scene.position.split())  # "top left": 2 words, "center": 1
        assert torch.equal(a[:-n], b[:-n]) and not a[-n:].any()
        assert all(np.array_equal(b[k].numpy().astype(bool), scene.objects[0].mask) for k in range(-n, 0))
    two = ShapesDataset(4, with_masks=True, kind="two_relation", position_masks=True)
    assert all(
        torch.equal(two[i]["word_masks"], ShapesDataset(4, with_masks=True, kind="two_relation")[i]["word_masks"])
        for i in range(4)
    )
