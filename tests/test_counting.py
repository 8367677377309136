"""Counting (issue 40): the grammar's numbers, counting scenes and masks, the count-swap negative,
and evaluation's ``counting`` and ``exact`` categories (a duplicated object fails ``exact``)."""

from __future__ import annotations

import numpy as np
import pytest

from crossattn.data.captions import COUNT_KINDS, format_caption, parse_caption
from crossattn.data.counting import counting_spec
from crossattn.data.drawing import composite, coverage
from crossattn.data.negatives import applicable_kinds, hard_negative, training_negatives
from crossattn.data.shapes import COLOURS, ShapesDataset, make_scene, scene_from_caption, scene_rng
from crossattn.evaluation.analyzer import analyze, label_components
from crossattn.evaluation.checks import check_caption
from crossattn.evaluation.grounding import ground_words
from crossattn.evaluation.run import eval_prompts


def draw(objects: list[tuple[str, str, tuple[float, float], float]], resolution: int = 32) -> np.ndarray:
    """A hand-placed scene: ``(colour, shape, centre, size)`` each, composited like the renderer's."""
    covers = [coverage(shape, centre, size, resolution) for _, shape, centre, size in objects]
    return composite(covers, [COLOURS[c] for c, *_ in objects], np.random.default_rng(0), 0.0)


def test_counting_captions_parse_and_format():
    spec = parse_caption("three blue squares and a green triangle")
    assert (spec.count, spec.objects, spec.relation, spec.kind) == (
        3,
        [("blue", "square"), ("green", "triangle")],
        "and",
        "count_and",
    )
    assert spec.instances() == [("blue", "square")] * 3 + [("green", "triangle")]
    assert spec.number_word() == 0 and [i for i, _, _ in spec.object_words()] == [1, 2, 5, 6]
    assert parse_caption("two red circles").kind == "count"
    assert parse_caption("a red circle").count == 1 and parse_caption("a red circle").number_word() is None
    assert format_caption([("red", "circle")], count=4) == "four red circles"
    for bad, named in [
        ("one red circle", "captions are"),
        ("two red circles and a red circle", "must differ"),
        ("two red circles left of a blue square", "captions are"),
        ("two red ring", "must be plural"),
    ]:
        with pytest.raises(ValueError, match=named):
            parse_caption(bad)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer

    from crossattn.models.loading import PRETRAINED_DIR

    return CLIPTokenizer.from_pretrained(PRETRAINED_DIR / "tokenizer")


def test_plural_words_tokenise_as_words(tokenizer):
    assert tokenizer.tokenize("two circles three squares four") == [
        "two</w>", "circles</w>", "three</w>", "squares</w>", "four</w>"
    ]  # fmt: skip
    assert tokenizer.tokenize("triangles") == ["tri", "angles</w>"]  # one word of two tokens (merge_words joins them)
    longest = "four purple triangles and an orange triangle"
    assert len(tokenizer(longest).input_ids) <= 16  # the text encoder's positions


def test_counting_scenes_draw_the_named_objects_apart_with_exact_masks():
    for i in range(12):  # the analyzer's count on 500 of each kind: benchmarks/analyzer_accuracy.py
        scene = make_scene(scene_rng(5, i), counting=1.0)
        spec = parse_caption(scene.caption)
        assert scene.kind == spec.kind and scene.kind in COUNT_KINDS
        assert [(o.colour, o.shape) for o in scene.objects] == spec.instances()
        masks = np.stack([o.mask for o in scene.objects])  # (objects, H, W)
        assert masks.sum(axis=0).max() == 1  # no pixel belongs to two objects
        assert label_components(masks.any(axis=0))[1] == len(scene.objects)  # none touches another
        group = masks[: spec.count].any(axis=0)
        assert np.array_equal(scene.word_masks[0], group) and np.array_equal(scene.word_masks[1], group)
        found = analyze(scene.image)
        assert sorted((o.colour, o.shape) for o in found) == sorted(spec.instances())


def test_counting_is_opt_in_and_leaves_seeded_scenes_unchanged():
    plain, zero = ShapesDataset(40, seed=2), ShapesDataset(40, seed=2, counting=0.0)
    assert all(plain.scene(i).caption == zero.scene(i).caption for i in range(40))
    assert all(np.array_equal(plain.scene(i).image, zero.scene(i).image) for i in range(40))
    mixed = [ShapesDataset(200, seed=2, counting=0.5).scene(i).kind for i in range(200)]
    assert 60 < sum(k in COUNT_KINDS for k in mixed) < 140
    item = ShapesDataset(4, counting=1.0, with_masks=True)[0]
    assert item["word_masks"].shape[0] == len(item["text"].split()) and item["word_masks"][0].any()
    with pytest.raises(ValueError, match="counting must be a share"):
        ShapesDataset(4, counting=1.5)


def test_scene_from_a_counting_caption():
    scene = scene_from_caption("four yellow triangles and a purple circle", np.random.default_rng(1))
    assert len(scene.objects) == 5 and scene.kind == "count_and"


def test_count_swap_negative():
    rng = np.random.default_rng(0)
    assert applicable_kinds(parse_caption("two red circles")) == ("count", "colour", "shape")
    assert hard_negative(parse_caption("two red circles"), "count", rng) == "three red circles"
    assert hard_negative(parse_caption("four red circles and a blue square"), "count", rng) == (
        "three red circles and a blue square"
    )
    assert {hard_negative(parse_caption("three red circles"), "count", rng) for _ in range(20)} == {
        "two red circles",
        "four red circles",
    }
    first = training_negatives(counting_spec(rng, kind="count"), 2, rng)[0]
    assert parse_caption(first).count > 1  # the structural negative of a counting caption is a count swap
    with pytest.raises(ValueError, match="does not apply"):
        hard_negative(parse_caption("a red circle"), "count", rng)


def test_exact_catches_a_duplicated_object_that_both_right_passes():
    # "a yellow square above a green circle" drawn with a second green circle (the speedrun's 1-in-6 miss)
    caption = "a yellow square above a green circle"
    duplicated = draw(
        [("yellow", "square", (16, 7), 4.0), ("green", "circle", (16, 24), 4.0), ("green", "circle", (5, 24), 3.5)]
    )
    check = check_caption(duplicated, caption)
    assert len(check.objects) == 3
    assert check.results["both"] and check.results["relation"] and not check.results["exact"]
    clean = draw([("yellow", "square", (16, 7), 4.0), ("green", "circle", (16, 24), 4.0)])
    assert check_caption(clean, caption).results["exact"]
    two = draw([("red", "circle", (8, 8), 4.0), ("red", "circle", (24, 24), 4.0)])
    assert not check_caption(two, "a red circle").results["exact"]  # "a" stays one


def test_counting_and_exact_on_hand_drawn_counting_scenes():
    caption = "two red circles and a blue square"
    right = [("red", "circle", (8, 8), 3.5), ("red", "circle", (24, 8), 3.5), ("blue", "square", (16, 24), 3.5)]
    results = check_caption(draw(right), caption).results
    assert results["counting"] and results["exact"] and results["all"]
    extra_group = check_caption(draw([*right, ("red", "circle", (6, 24), 3.0)]), caption)
    assert not extra_group.results["counting"] and len(extra_group.group) == 3
    stray = check_caption(draw([*right, ("green", "triangle", (26, 24), 3.0)]), caption).results
    assert stray["counting"] and not stray["exact"]  # the right group and square, and one more thing
    missing_single = check_caption(draw(right[:2]), caption).results
    assert not missing_single["counting"]


def test_the_number_word_is_grounded_on_the_group():
    objects = [("red", "circle", (8, 8), 3.5), ("red", "circle", (24, 8), 3.5), ("blue", "square", (16, 24), 3.5)]
    check = check_caption(draw(objects), "two red circles and a blue square")
    group = check.objects[check.group[0]].mask | check.objects[check.group[1]].mask
    records = ground_words(check, lambda index: group.astype(float) if index <= 2 else ~group)
    number = records[0]
    assert (number["word"], number["kind"], number["iou"]) == ("two", "number", 1.0)
    assert [r["iou"] for r in records[1:3]] == [1.0, 1.0] and records[3]["iou"] < 0.5


def test_eval_prompts_append_counting_prompts():
    plain, counted = eval_prompts(30, seed=4), eval_prompts(30, seed=4, counting=12)
    assert [p.caption for p in counted[:30]] == [p.caption for p in plain]
    extra = counted[30:]
    assert [p.kind for p in extra] == ["count", "count_and"] * 6
    assert [parse_caption(p.caption).count for p in extra[::2]] == [2, 3, 4, 2, 3, 4]
    assert len({p.seed for p in counted}) == 42


def test_speedrun_counting_recipe_feeds_counting_scenes():
    from crossattn.commands.train import make_dataset
    from crossattn.config import ModelConfig, TrainingConfig
    from crossattn.models.vocabulary import dataset_words
    from crossattn.training.recipes import get_recipe

    model, training = get_recipe("speedrun-counting").apply(ModelConfig(), TrainingConfig())
    assert training.counting == 0.25 and training.recipe == "speedrun-counting"
    assert get_recipe("speedrun").apply(ModelConfig(), TrainingConfig())[1].counting == 0.0
    data = make_dataset(model, training)(100)
    assert any(data.scene(i).kind in COUNT_KINDS for i in range(20))
    assert {"two", "three", "four", "circles", "squares", "triangles"} <= dataset_words(data)
    with pytest.raises(ValueError, match="counting must be a share"):
        TrainingConfig(counting=-0.1)


def test_counting_word_masks_reach_every_token_of_their_words(tokenizer):
    """What the grounding loss reads: the number, colour and two-token plural all hold the group's pixels."""
    import torch

    from crossattn.training.grounding_loss import TokenMasks

    data = ShapesDataset(60, counting=1.0, with_masks=True)
    item = next(data[i] for i in range(60) if data[i]["text"].split()[2] == "triangles")
    masks = TokenMasks(tokenizer, 16)(item["text"], item["word_masks"])  # (T, H, W)
    group = item["word_masks"][0]
    assert group.sum() > 0 and all(torch.equal(masks[t], group) for t in (1, 2, 3, 4))  # two/…, colour, tri, angles


@pytest.mark.parametrize("kind", COUNT_KINDS)
def test_export_writes_counting_scenes_with_a_mask_per_object(kind, tmp_path):
    import json

    from crossattn.cli import main

    assert main(["export", "scenes", str(tmp_path / "data"), "--n", "3", "--kind", kind]) == 0
    records = [json.loads(line) for line in (tmp_path / "data" / "metadata.jsonl").read_text().splitlines()]
    masks = np.load(tmp_path / "data" / "masks.npz")
    for record in records:
        spec = parse_caption(record["text"])
        assert spec.kind == kind and masks[record["file_name"]].shape[0] == len(spec.instances())


def test_counting_share_reaches_the_mini_clip_and_both_commands(tmp_path, monkeypatch, capsys):
    """``--counting F`` is one data flag of ``train`` and ``train-clip``: the mini-CLIP's training scenes draw
    counting captions and its held-out probe scores the count swap; a share outside [0, 1] is refused by name."""
    import json

    from crossattn.cli import build_parser, main
    from crossattn.commands import train, train_clip
    from crossattn.data import negatives
    from crossattn.training import clip_training

    from .test_clip import tiny_config as tiny_clip

    shares, real = [], negatives.ClipScenes.__init__

    def spy(self, *args, **kw):
        shares.append(kw.get("counting", 0.0))
        real(self, *args, **kw)

    monkeypatch.setattr(negatives.ClipScenes, "__init__", spy)
    monkeypatch.setattr(clip_training, "PROBE_SCENES", 24)
    settings = dict(steps=1, batch_size=4, dataset_size=8, warmup_steps=0, sample_every=1, counting=0.5)
    clip_training.train_clip(
        tiny_clip(), clip_training.clip_training_defaults(**settings), tmp_path / "run", progress=False
    )
    assert len(shares) >= 2 and set(shares) == {0.5}  # the training scenes and the probe's
    log = (tmp_path / "run/log.jsonl").read_text().splitlines()
    probe = [json.loads(line)["clip_probe"] for line in log if "clip_probe" in line][-1]
    assert "count" in json.dumps(probe)
    parse = build_parser().parse_args
    assert train_clip.build_configs(parse(["train-clip", "--counting", "0.25"]))[1].counting == 0.25
    assert train.build_configs(parse(["train", "--counting", "0.25"]))[1].counting == 0.25
    with pytest.raises(SystemExit) as refused:
        main(["train", "--out", str(tmp_path / "bad"), "--counting", "1.5"])
    assert refused.value.code == 2 and "expected a share between 0 and 1, got 1.5" in capsys.readouterr().err
