"""Evaluation: the analyzer on rendered scenes, caption checks, grounding sanity, the eval CLI."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from crossattn.cli import main
from crossattn.config import SamplingConfig
from crossattn.data.shapes import COLOURS, coverage, make_scene, scene_from_caption, scene_rng
from crossattn.evaluation.analyzer import analyze, label_components
from crossattn.evaluation.checks import check_caption
from crossattn.evaluation.grounding import ground_words, map_iou
from crossattn.evaluation.run import EvalSettings, eval_prompts, run_evaluation

TINY = {
    "resolution": 16,
    "block_out_channels": (8, 16),
    "cross_attention_levels": (False, True),
    "norm_num_groups": 4,
    "attention_head_dim": 8,
    "text_hidden_size": 16,
    "text_layers": 1,
    "text_heads": 2,
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from crossattn.config import ModelConfig
    from crossattn.models.loading import placeholder_pipeline

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    placeholder_pipeline(ModelConfig(**TINY)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("resolution", "n"), [(32, 60), (64, 15)])
def test_analyzer_finds_every_object_of_rendered_scenes(resolution, n):
    for i in range(n):
        scene = make_scene(scene_rng(11, i), resolution)
        found = analyze(scene.image, resolution)
        assert len(found) == len(scene.objects), scene.caption
        for obj in scene.objects:
            best = max(found, key=lambda d, o=obj: (d.mask & o.mask).sum())
            assert (best.colour, best.shape) == (obj.colour, obj.shape), scene.caption
            assert (best.mask == obj.mask).all()
            assert np.hypot(best.centroid[0] - obj.centroid[0], best.centroid[1] - obj.centroid[1]) < 0.5
            x0, y0, x1, y1 = best.bbox
            assert best.mask[y0:y1, x0:x1].sum() == best.mask.sum()
        assert check_caption(scene.image, scene.caption, resolution).passed, scene.caption


def test_analyzer_is_robust_to_faint_noise():
    for i in range(40):
        scene = make_scene(scene_rng(12, i), noise=8 / 255)
        assert check_caption(scene.image, scene.caption).passed, scene.caption


@pytest.mark.parametrize("shape", ["square", "triangle"])
def test_shape_is_rotation_invariant(shape):
    for angle in np.deg2rad([10, 25, 40, 70]):
        cov = coverage(shape, (16.3, 15.8), 6.0, 32, angle)[..., None]  # (H, W, 1)
        image = np.rint(255 + cov * (np.array(COLOURS["blue"]) - 255)).astype(np.uint8)
        (found,) = analyze(image)
        assert (found.shape, found.colour) == (shape, "blue")


def test_label_components_uses_8_connectivity():
    fg = np.zeros((6, 6), bool)
    fg[0, 0] = fg[1, 1] = True  # diagonal neighbours: one component
    fg[4:6, 3:6] = True
    fg[0, 5] = True
    labels, count = label_components(fg)
    assert count == 3
    assert labels[0, 0] == labels[1, 1] != labels[4, 4]
    assert labels[~fg].max() == 0 and len(np.unique(labels[fg])) == 3


def test_caption_checks_catch_each_kind_of_mistake():
    rng = np.random.default_rng(0)
    one = scene_from_caption("a red circle at the top left", rng)
    assert check_caption(one.image, "a red circle at the top left").passed
    wrong = check_caption(one.image, "a blue square at the bottom right").results
    assert not wrong["colour"] and not wrong["shape"] and not wrong["position"] and wrong["count"]
    two = scene_from_caption("a green triangle above a purple square", rng)
    assert check_caption(two.image, "a green triangle above a purple square").passed
    flipped = check_caption(two.image, "a green triangle below a purple square").results
    assert flipped["both"] and flipped["count"] and not flipped["relation"]
    missing = check_caption(two.image, "a green triangle and a yellow circle").results
    assert not missing["both"] and missing["count"]
    many = check_caption(two.image, "a green triangle").results
    assert not many["count"]


def test_bad_inputs_name_what_is_accepted():
    scene = make_scene(np.random.default_rng(1), 64)
    with pytest.raises(ValueError, match="resolution is 32; accepted: 32x32"):
        check_caption(scene.image, scene.caption, 32)
    with pytest.raises(ValueError, match="colours: red, orange"):
        check_caption(scene.image, "a pink circle", 64)
    with pytest.raises(ValueError, match="relations: left of"):
        check_caption(scene.image, "a red circle near a blue square", 64)
    with pytest.raises(ValueError, match="RGB"):
        analyze(scene.image[..., 0])


def test_grounding_sanity_on_ground_truth_scenes():
    for i in range(20):
        scene = make_scene(scene_rng(13, i))
        for mask in scene.word_masks.values():
            assert map_iou(mask.astype(np.float32), mask) == 1.0
            assert map_iou(torch.full(mask.shape, 0.02), mask) == pytest.approx(mask.mean())
            # attention is never zero off the object: an offset background must not change the IoU
            assert map_iou(0.5 + 0.1 * mask.astype(np.float32), mask) == 1.0
    with pytest.raises(ValueError, match="must match"):
        map_iou(np.ones((16, 16)), np.ones((32, 32), bool))


def test_ground_words_uses_the_matched_objects_masks():
    scene = scene_from_caption("a red circle left of a red square", np.random.default_rng(2))
    check = check_caption(scene.image, scene.caption)
    records = ground_words(check, lambda index: scene.word_masks[index].astype(float))
    assert [r["word"] for r in records] == ["red", "circle", "red", "square"]
    assert all(r["iou"] == 1.0 for r in records)
    wrong = check_caption(scene.image, "a red circle left of a blue square")
    records = ground_words(wrong, lambda index: scene.word_masks.get(index, np.ones((32, 32))))
    assert [r["skipped"] for r in records] == [None, None, "object not found", "object not found"]


def test_eval_prompts_are_balanced_and_seeded():
    prompts = eval_prompts(300, seed=0)
    kinds = [p.kind for p in prompts]
    assert kinds.count("one") == 50 and kinds.count("one_position") == 100
    assert kinds.count("two_relation") == 120 and kinds.count("two_and") == 30
    assert sum("at the center" in p.caption for p in prompts) == 20
    assert [p.caption for p in prompts] == [p.caption for p in eval_prompts(300, seed=0)]
    assert [p.caption for p in prompts] != [p.caption for p in eval_prompts(300, seed=1)]
    assert len({p.seed for p in prompts}) == 300


class FakeMaps:
    """Stands in for the capture issue's AttentionMaps: every word's map is uniform."""

    def word_map(self, word, image=0):
        return torch.ones(16, 16)


@contextlib.contextmanager
def fake_trace(pipe):
    class Tracer:
        def maps(self):
            return FakeMaps()

    yield Tracer()


def test_run_evaluation_with_a_tracer_reports_grounding(tiny_model):
    from crossattn.evaluation.report import build_report
    from crossattn.models.loading import load_pipeline

    pipe = load_pipeline(tiny_model)
    pipe.set_progress_bar_config(disable=True)
    results, seconds = run_evaluation(
        pipe, EvalSettings(n=4, sampling=SamplingConfig(steps=1), batch_size=4, counting=2), trace=fake_trace
    )
    report = build_report(results, EvalSettings(n=4, counting=2), {"path": "x", "hash": "y"}, "ddim", seconds, None)
    assert set(report["grounding"]) == {"colour", "shape", "all", "number", "group"}
    assert report["grounding"]["all"]["n"] + sum(report["grounding"]["all"]["skipped"].values()) == 2 * 2 + 2 * 4
    words = [w for r in results for w in r.words]
    # two one-object and two two-object prompts, then "two X Ys" (3 words) and "three X Ys and a Y Z" (5)
    assert len(words) == 2 * 2 + 2 * 4 + 3 + 5
    for w in words:
        assert w["skipped"] or 0.0 <= w["iou"] <= 1.0


def test_eval_cli_end_to_end(tiny_model, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tiny_model), "--n", "6", "--steps", "2", "--out", str(out), "--batch-size", "3"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert {"version", "model", "settings", "accuracy", "grounding", "counts", "samples"} <= set(report)
    assert report["counts"]["prompts"] == 8 and len(report["samples"]) == 8  # + a third of --n counting prompts
    assert report["model"]["hash"] and report["settings"]["steps"] == 2
    assert {"all", "one.colour", "one.shape", "one.position", "two.both", "two.relation"} <= set(report["accuracy"])
    assert {"exact", "one.exact", "two.exact", "count.counting", "count.exact"} <= set(report["accuracy"])
    if report["grounding"] is None:
        assert report["grounding_unavailable"]
    assert "category" in capsys.readouterr().out
    assert main(argv) == 2  # refuses to overwrite
    assert "will not overwrite" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert main([*argv, "--overwrite", "--scheduler", "nope"]) == 2
    assert "choices: ddpm" in capsys.readouterr().err


class TokenMaps(FakeMaps):
    """AttentionMaps-like: one distinct map per token of 'a red circle left of a red square'."""

    CAPTION = "a red circle left of a red square"
    TOKENS = ["<|startoftext|>", *(f"{w}</w>" for w in CAPTION.split(" ")), "<|endoftext|>"]

    def tokens_for(self, image):
        return self.TOKENS

    def token_map(self, index, image=0):
        return torch.full((16, 16), float(index))


def test_attention_word_map_reads_repeated_words_from_their_own_tokens():
    from crossattn.evaluation.grounding import attention_word_map

    caption = "a red circle left of a red square"
    assert attention_word_map(FakeMaps(), caption, 0)(2).shape == (16, 16)  # unique word: word_map
    assert attention_word_map(FakeMaps(), caption, 0)(1) is None  # repeated, maps cannot split it
    try:
        import crossattn.attention.maps  # noqa: F401  (the capture issue's module)
    except ImportError:
        assert attention_word_map(TokenMaps(), caption, 0)(6) is None
    else:
        assert float(attention_word_map(TokenMaps(), caption, 0)(6)[0, 0]) == 7.0  # 2nd "red" is token 7
