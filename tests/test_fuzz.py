"""Property-based fuzzing of the library's entry points (issue 43 item 6): over any prompt, number or file
bytes, the request check, the image reader and the model-folder check either succeed or raise an error of
the crossattn family, never anything else. Seeded and bounded (few examples, no deadline): a few seconds."""

from __future__ import annotations

import math
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossattn.errors import CrossattnError
from crossattn.models.loading import check_lora_folder, check_model_folder
from crossattn.sampling import SamplingRequest
from crossattn.sampling.given_image import fit_image, read_image

FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
NUMBERS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -0.0, 2**63, 2**64, "3", b"1", [1]]),
)


def family_or_success(call, *args, **kwargs):
    """``call``'s result, or None when it raised a :class:`CrossattnError` (anything else propagates)."""
    try:
        return call(*args, **kwargs)
    except CrossattnError:
        return None


@FUZZ
@given(prompts=st.lists(st.text(), max_size=3), negative=st.one_of(st.none(), st.text()))
def test_any_prompt_is_accepted_or_refused_cleanly(prompts, negative):
    request = family_or_success(SamplingRequest, prompts, negative_prompt=negative)
    if request is not None:
        assert all(p.strip() for p in request.prompts)


@FUZZ
@given(
    field=st.sampled_from(
        ["seed", "steps", "guidance", "relation_guidance", "num_images", "batch_size", "upscale", "height", "width"]
    ),
    value=NUMBERS,
)
def test_any_number_is_accepted_or_refused_cleanly(field, value):
    family_or_success(SamplingRequest, ("a red circle",), **{field: value})


@FUZZ
@given(strength=NUMBERS, samples=NUMBERS)
def test_any_strength_and_samples_are_accepted_or_refused_cleanly(picture, strength, samples):
    family_or_success(SamplingRequest, ("a red circle",), image=picture, strength=strength, samples=samples)


@FUZZ
@given(data=st.data())
def test_any_file_bytes_are_an_image_or_a_bad_image(picture, tmp_path, data):
    whole = picture.read_bytes()
    cut = data.draw(st.integers(0, len(whole)))
    noise = data.draw(st.binary(max_size=64))
    at = data.draw(st.integers(0, len(whole)))
    content = data.draw(st.sampled_from([whole[:cut], whole[:at] + noise + whole[at + len(noise) :], noise]))
    path = tmp_path / "fuzzed.png"
    path.write_bytes(content)
    image = family_or_success(read_image, path)
    if image is not None:
        fitted, _ = family_or_success(fit_image, image, (16, 16)) or (image.convert("RGB").resize((16, 16)), ())
        assert fitted.size == (16, 16)


@FUZZ
@given(data=st.data())
def test_any_damaged_weight_file_is_a_bad_model_folder(tiny_model_dir, tmp_path, data):
    folder = tmp_path / "model"
    if not folder.exists():
        shutil.copytree(tiny_model_dir, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    whole = (tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    cut = data.draw(st.integers(0, len(whole)))
    flipped = data.draw(st.binary(min_size=1, max_size=16))
    at = data.draw(st.integers(0, 200))  # the header: its length and JSON
    weights.write_bytes(data.draw(st.sampled_from([whole[:cut], whole[:at] + flipped + whole[at + len(flipped) :]])))
    family_or_success(check_model_folder, folder)
    family_or_success(check_lora_folder, folder / "unet")  # no LoRA weights there: a clean refusal


@FUZZ
@given(text=st.text(max_size=40))
def test_any_model_index_is_loaded_or_refused_cleanly(tiny_model_dir, tmp_path, text):
    """(A component's config.json is left out: ``{}`` is valid and builds diffusers' default, full-size U-Net.)"""
    from crossattn.models.loading import load_pipeline

    folder = tmp_path / "model"  # copied once: loading reads it, only model_index.json changes
    if not folder.exists():
        shutil.copytree(tiny_model_dir, folder)
    (folder / "model_index.json").write_text(text)
    family_or_success(load_pipeline, folder)
