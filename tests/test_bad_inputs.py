"""Every bad input is one clear sentence (issue 43): damaged images, broken model and LoRA folders, sizes
that cannot fit in memory, absurd counts; each refused with an error of the crossattn family naming the
file (and the part of it) or the value, and what is accepted."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from crossattn.cli import main
from crossattn.errors import BadArgument, BadImage, BadModelFolder, MissingFile
from crossattn.models.loading import check_lora_folder, check_model_folder, load_pipeline
from crossattn.sampling import MapsOptions, SamplingRequest
from crossattn.sampling.given_image import read_image

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def png_bytes(tmp_path, size=(64, 64)) -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    return (tmp_path / "whole.png").read_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"not an image at all", "not an image Pillow can decode"),
        ("half", r"the PNG 64x64 file is truncated or damaged"),
    ],
)
def test_damaged_images_are_named(tmp_path, content, message):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(tmp_path)[:600] if content == "half" else content)
    with pytest.raises(BadImage, match=f"cannot read image {path}: {message}"):
        read_image(path)


def test_folders_missing_files_and_bombs_are_named(tmp_path, monkeypatch):
    with pytest.raises(BadImage, match="is a folder, not a file"):
        read_image(tmp_path)
    with pytest.raises(MissingFile, match="nope.png does not exist"):
        read_image(tmp_path / "nope.png")
    png_bytes(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses twice its limit: 2,000 < 64 x 64
    with pytest.raises(BadImage, match="more than 0 M pixels, Pillow's safety limit"):
        read_image(tmp_path / "whole.png")


def test_unusual_modes_are_read_sensibly(tmp_path):
    grey16 = np.full((8, 8), 65535 // 2, dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    with pytest.warns(UserWarning, match="I;16 .*scaled to 8 bits"):
        assert np.asarray(read_image(tmp_path / "deep.png")).mean() == pytest.approx(128, abs=1)
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="has 2 frames; reading the first"):
        assert read_image(tmp_path / "anim.gif").convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    for mode, name in (("CMYK", "c.jpg"), ("LA", "la.png"), ("P", "p.png"), ("1", "bw.png"), ("RGB", "one.png")):
        Image.new(mode, (1, 1) if name == "one.png" else (8, 8)).save(tmp_path / name)
        assert read_image(tmp_path / name).size in ((1, 1), (8, 8))


def test_extreme_aspect_ratios_are_refused(tmp_path):
    Image.new("RGB", (9, 1)).save(tmp_path / "strip.png")
    with pytest.raises(BadImage, match=r"strip.png is 9x1: too narrow to read .* at most 8:1"):
        read_image(tmp_path / "strip.png")
    Image.new("RGB", (1, 8)).save(tmp_path / "ok.png")
    assert read_image(tmp_path / "ok.png").size == (1, 8)


@pytest.fixture
def broken_copy(tiny_model_dir, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_truncated_and_garbage_weights_name_the_file(broken_copy):
    weights = broken_copy / WEIGHTS
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadModelFolder, match=rf"{WEIGHTS} is truncated \(read 0.\d+ of 0.\d+ MB\)"):
        check_model_folder(broken_copy)
    weights.write_bytes(b"\xff" * 100)
    with pytest.raises(BadModelFolder, match=f"{WEIGHTS} is not a safetensors file"):
        check_model_folder(broken_copy)
    weights.write_bytes(data[:8] + b"{not json" + data[17:])
    with pytest.raises(BadModelFolder, match="its header is not safetensors' JSON"):
        load_pipeline(broken_copy)


def test_a_config_that_disagrees_with_its_weights_names_the_component(broken_copy):
    config = json.loads((broken_copy / "unet/config.json").read_text())
    config["block_out_channels"] = [16, 32]
    (broken_copy / "unet/config.json").write_text(json.dumps(config))
    with pytest.raises(
        BadModelFolder, match=r"unet/config.json does not match .*: conv_in.bias is \[8\] in the weights"
    ):
        load_pipeline(broken_copy)


def test_a_config_value_of_the_wrong_type_is_a_bad_model_folder(broken_copy):
    """Found by benchmarks/fuzz.py: ``"act_fn": 0`` made diffusers raise AttributeError (a bare traceback)."""
    config = json.loads((broken_copy / "unet/config.json").read_text())
    config["act_fn"] = 0
    (broken_copy / "unet/config.json").write_text(json.dumps(config))
    with pytest.raises(BadModelFolder, match=f"model folder {broken_copy} cannot be loaded: 'int' object"):
        load_pipeline(broken_copy)


def test_a_broken_lora_folder_names_the_file(tmp_path):
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(BadModelFolder, match="LoRA folder .*pytorch_lora_weights.safetensors is truncated"):
        check_lora_folder(folder)


def test_sizes_that_cannot_fit_in_memory_are_refused_with_the_estimate(tiny_pipe):
    SamplingRequest(("a red circle",), upscale=4).check_fits(tiny_pipe)  # fits
    with pytest.raises(BadArgument, match=r"upscaled 100000x to 1600000x1600000, needs about [\d,]+ TB of memory"):
        SamplingRequest(("a red circle",), upscale=100_000).check_fits(tiny_pipe)
    with pytest.raises(BadArgument, match=r"sampling 1 image of 4096x4096 at a time needs about .* free"):
        SamplingRequest(("a red circle",), height=4096, width=4096, maps=MapsOptions(kind="both")).check_fits(tiny_pipe)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["edit", "a red circle", "--to", ""], "prompt '' is empty"),
        (["generate", "  "], "prompt '  ' is empty"),
        (["generate", "a red circle", "--threads", "100000"], "100000 is more than the .* CPU cores"),
        (
            ["generate", "a red circle", "--steps", "5000"],
            "steps 5000 is not accepted; give a whole number from 1 to 1000",
        ),
        (["generate", "a red circle", "--seed", str(2**64)], "seed 18446744073709551616 is not accepted"),
    ],
)
def test_the_cli_refuses_in_one_line(argv, message, capsys, tmp_path):
    try:
        code = main([*argv, "--out", str(tmp_path)])
    except SystemExit as exit:  # argparse's refusals
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "crossattn" in err
    assert __import__("re").search(message, err), err


def test_a_long_prompt_is_our_one_line_warning_only(tiny_pipe):
    """Found by benchmarks/fuzz.py: a real ``crossattn generate`` with a long prompt also printed transformers'
    "Token indices sequence length is longer than ..." log line beside crossattn's own warning."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    tiny_pipe.tokenizer.deprecation_warnings.pop("sequence-length-is-longer-than-the-specified-maximum", None)
    try:
        with pytest.warns(UserWarning, match="is longer than the 16 tokens the text encoder reads; dropped: 'a a"):
            tiny_pipe.encode_prompt(["a " * 100])
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert not [r.getMessage() for r in records if "sequence length" in r.getMessage()]


def test_draws_beyond_the_bound_are_refused(tmp_path):
    """Found by benchmarks/fuzz.py: ``maps --image --samples 18446744073709551616`` ended in an OverflowError."""
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    with pytest.raises(BadArgument, match="samples 18446744073709551616 is not accepted; give a whole number from 1"):
        SamplingRequest(("a red circle",), image=tmp_path / "x.png", samples=2**64)


def test_a_dual_cross_attention_unet_is_a_bad_model_folder(broken_copy):
    """Found by benchmarks/fuzz.py: a truthy ``dual_cross_attention`` loaded, then failed mid-sampling. It is refused
    before loading, so no warning comes first (diffusers listed every newly initialised weight, a few hundred)."""
    config = json.loads((broken_copy / "unet/config.json").read_text())
    config["dual_cross_attention"] = "x"
    (broken_copy / "unet/config.json").write_text(json.dumps(config))
    with (
        warnings.catch_warnings(),
        pytest.raises(BadModelFolder, match="unet/config.json says dual_cross_attention 'x'"),
    ):
        warnings.simplefilter("error")  # any warning before the error fails the test
        load_pipeline(broken_copy)


def test_missing_weights_are_one_line_without_diffusers_own(broken_copy):
    """Found by benchmarks/fuzz.py: diffusers logged "An error occurred while trying to fetch ..." on stderr
    before the error crossattn reports in its one line."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers.models.modeling_utils")
    logger.addHandler(handler)
    (broken_copy / WEIGHTS).unlink()
    try:
        with pytest.raises((BadModelFolder, MissingFile)):
            load_pipeline(broken_copy)
    finally:
        logger.removeHandler(handler)
    assert not [r.getMessage() for r in records if "An error occurred" in r.getMessage()]


def test_an_upload_damaged_past_its_header_is_named(tmp_path):
    """Found by benchmarks/fuzz.py: Gradio opens an upload lazily; a body damaged past a whole header failed
    later, inside the request, as Gradio's generic "Error"."""
    gr = pytest.importorskip("gradio")
    from gradio.data_classes import FileData

    from crossattn.web.answers import reading

    component = reading(gr.Image(type="pil"))
    component.GRADIO_CACHE = str(tmp_path)
    path = tmp_path / "upload" / "x.gif"  # a PNG or JPEG is decoded by Gradio itself: a GIF is opened lazily
    path.parent.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(gr.Error, match="cannot read the image 'x.gif'"):
        component.preprocess(FileData(path=str(path), orig_name="x.gif"))


def test_weights_the_folder_lacks_are_one_warning_line(broken_copy, recwarn):
    """Found by benchmarks/fuzz.py: a unet/config.json asking for weights the file lacks (``num_class_embeds``)
    printed diffusers' two-line "Some weights ... newly initialized" notice beside crossattn's lines."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers.models.modeling_utils")
    logger.addHandler(handler)
    config = json.loads((broken_copy / "unet/config.json").read_text())
    config["num_class_embeds"] = 3
    (broken_copy / "unet/config.json").write_text(json.dumps(config))
    try:
        load_pipeline(broken_copy)
    finally:
        logger.removeHandler(handler)
    assert not records
    assert [str(w.message) for w in recwarn if "newly initialized: ['class_embedding.weight']" in str(w.message)]


@pytest.mark.parametrize(("key", "value"), [("resnet_out_scale_factor", [4, 8]), ("upcast_attention", "x")])
def test_a_config_value_that_breaks_only_when_run_is_refused_at_load(broken_copy, key, value):
    """Found by benchmarks/fuzz.py: ``"resnet_out_scale_factor": [4, 8]`` loaded, then failed mid-sampling."""
    config = json.loads((broken_copy / "unet/config.json").read_text())
    config[key] = value
    (broken_copy / "unet/config.json").write_text(json.dumps(config))
    with pytest.raises(
        BadModelFolder, match=rf"unet/config.json says {key} {value!r}; give a (float|bool)".replace("[", r"\[")
    ):
        load_pipeline(broken_copy)


def test_a_side_beyond_the_bound_is_refused():
    """Found by benchmarks/fuzz.py: ``generate --width 100000`` on a tiny model passed the memory check (fused
    attention) and sampled for over 10 minutes in one attention call."""
    with pytest.raises(BadArgument, match="width 100000 is not accepted; give a whole number from 1 to 4096"):
        SamplingRequest(("a red circle",), width=100_000)
