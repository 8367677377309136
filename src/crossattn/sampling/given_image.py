"""Word maps of an image the model did not draw (issue 25): ``crossattn.maps_of_image``.

    result = crossattn.maps_of_image(pipe, "photo.png", "a red circle left of a blue square", strength=0.5)
    result.maps.word_map("circle")  # (H, W), H x W the model's image size
    result.image, result.denoised   # the given image at the model's size; what the model made of it

The image is brought to the model's input (converted to RGB, resized to the size the model draws,
encoded by the VAE for latent pipelines: ``latent_dist.mean`` × ``scaling_factor``), noised to the
timestep ``strength`` names and read under :func:`crossattn.trace` in one of two modes:

- ``samples=None``, *denoise*: the last ``strength`` share of the sampling steps run from the noised
  image (SDEdit, Meng et al., 2022), as diffusers' img2img pipelines do; the maps are summed over
  those steps, as for a generated image.
- ``samples=N``, *draws*: N noise draws at that one timestep, one U-Net pass each (no sampling),
  maps averaged over the draws (as DAAM-style analyses of real images do); ``denoised`` is the mean
  of the N one-step predictions of the clean image. Unguided: the maps are of the prompt's half anyway.

Relation guidance is off (it would move the objects away from where the image has them).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SamplingConfig
from .request import DEFAULT_STRENGTH
from .sizes import default_size


@dataclass
class ImageMaps:
    """The maps of a given image and what the model made of it."""

    maps: Any  # AttentionMaps
    image: Any  # PIL.Image: the given image as the model read it (RGB, the model's size)
    denoised: Any  # PIL.Image: the denoised output (denoise mode) or mean one-step prediction (draws mode)
    timestep: int  # the timestep the image was noised to
    mode: str  # "denoise" or "draws"
    notes: tuple[str, ...]  # what was done to the image to fit the model (mode converted, resized)


#: Widest aspect ratio (long side : short side) a given image may have: the model reads a square's worth
#: of it (the centre crop), so a wider strip would leave most of the picture unread.
MAX_ASPECT = 8
#: Pillow's modes of more than 8 bits a channel, and the largest value each holds (scaled to 8 bits on reading)
WIDE_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def read_image(path: str | Path):
    """The image in ``path`` (fully decoded; an animation's first frame, 16-bit and float greys scaled to
    8 bits, each with a warning); a :class:`~crossattn.errors.MissingFile` or :class:`~crossattn.errors.BadImage`
    naming the file and what is wrong with it otherwise."""
    from ..errors import BadImage, MissingFile

    path = Path(path)
    if not path.exists():
        raise MissingFile(f"image {path} does not exist (give a PNG, JPEG or other file Pillow reads)")
    if not path.is_file():
        raise BadImage(f"image {path} is a folder, not a file (give a PNG, JPEG or other file Pillow reads)")
    if path.stat().st_size == 0:
        raise BadImage(f"cannot read image {path}: the file is empty (0 bytes)")
    return readable(decoded(path), f"image {path}")


def readable(image, name: str):
    """``image`` as :func:`read_image` returns a file's (a :class:`~crossattn.errors.BadImage` naming ``name``
    and its size when too narrow; more than 8 bits a channel scaled to 8), so that a picture handed over in
    memory (the explorer's upload, the API's PIL image) is read as the same file would be."""
    from ..errors import BadImage

    if min(image.size) < 1 or max(image.size) > MAX_ASPECT * min(image.size):
        raise BadImage(
            f"{name} is {image.width}x{image.height}: too narrow to read (the model sees its centre "
            f"square); give an image at most {MAX_ASPECT}:1 long side to short side"
        )
    return eight_bit(image, name)


def decoded(path: Path):
    """``path`` opened and decoded by Pillow (its first frame), within Pillow's decompression-bomb limit."""
    from PIL import Image, UnidentifiedImageError

    from ..errors import BadImage

    what = "file"
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            what = f"{image.format} {image.width}x{image.height} file"
            image.load()
            picture = image.copy()
    except Image.DecompressionBombError:
        raise BadImage(
            f"cannot read image {path}: it has more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} M pixels, "
            "Pillow's safety limit (a decompression-bomb guard); give a smaller image"
        ) from None
    except UnidentifiedImageError:
        raise BadImage(
            f"cannot read image {path}: not an image Pillow can decode (give a PNG, JPEG, GIF, BMP, TIFF or WebP)"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:  # what Pillow's decoders raise on damaged data
        raise BadImage(
            f"cannot read image {path}: the {what} is truncated or damaged "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    if frames > 1:
        warnings.warn(f"image {path} has {frames} frames; reading the first", stacklevel=4)
    return picture


def eight_bit(image, name: str):
    """``image`` with more than 8 bits a channel (16-bit, 32-bit or float greys) scaled to 8-bit ``L``."""
    if image.mode not in WIDE_MODES:
        return image
    import numpy as np
    from PIL import Image

    top = WIDE_MODES[image.mode]
    values = np.asarray(image, dtype=np.float64)
    if image.mode in ("I", "F") and np.nanmax(values, initial=0) > top:
        top = float(np.nanmax(values))  # a 32-bit or float image beyond the usual range: its own maximum
    grey = np.clip(np.nan_to_num(values / top * 255), 0, 255).round().astype(np.uint8)
    warnings.warn(f"{name} is {image.mode} ({top:g} = white); scaled to 8 bits", stacklevel=5)
    return Image.fromarray(grey, "L")


def rgb(image, name: str = "the image"):
    """``image`` in RGB (transparency on white: :func:`~crossattn.data.folder.to_rgb`); a mode Pillow cannot
    convert (``La``, ...) is a :class:`~crossattn.errors.BadImage` naming it."""
    from ..data.folder import to_rgb

    try:
        return to_rgb(image)
    except ValueError:
        from ..errors import BadImage

        raise BadImage(f"{name} is {image.mode}, which Pillow cannot convert to RGB; give an RGB image") from None


def fit_image(image, size: tuple[int, int], name: str = "the image"):
    """``image`` as the model reads it: RGB (transparency on white) at ``size`` (shorter side scaled,
    centre cropped). Returns ``(image, notes)``; each note says what changed and is also warned."""
    from ..data.folder import has_alpha, resize_center_crop

    notes = []
    if image.mode != "RGB":
        notes.append(
            f"{name} is {image.mode}; converted to RGB" + (" (transparency on white)" if has_alpha(image) else "")
        )
        image = rgb(image, name)
    h, w = size
    if image.size != (w, h):
        # square models (all shipped ones): shorter side scaled, centre cropped; a non-square U-Net: plain resize
        fitted = image.resize((w, h)) if h != w else resize_center_crop(image, h)
        notes.append(f"{name} is {image.width}x{image.height}; resized to the model's {w}x{h}")
        image = fitted
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return image, tuple(notes)


def given_picture(pipe, image):
    """``image`` (a path or a PIL image) read and fitted to ``pipe``'s size: ``(PIL image, notes)``."""
    name = f"image {image}" if isinstance(image, str | Path) else "the image"
    picture = read_image(image) if isinstance(image, str | Path) else readable(image, name)
    return fit_image(picture, default_size(pipe), name)  # the size the model draws by default


def image_latents(pipe, image):
    """The model's input for ``image`` (PIL at the model's size): ``(1, C, h, w)``, the pixels in
    [-1, 1], or for a pipeline with a VAE their latents (``(latent_dist.mean − shift_factor) ×
    scaling_factor``; SD3's and Flux's VAEs shift, SD's do not)."""
    import torch

    pixels = pipe.image_processor.preprocess(image)  # (1, 3, H, W) in [-1, 1]
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return pixels.to(pipe.device, pipe.unet.dtype)
    with torch.no_grad():
        latents = vae.encode(pixels.to(pipe.device, vae.dtype)).latent_dist.mean  # (1, C, H/f, W/f)
    return (latents - (vae.config.get("shift_factor") or 0.0)) * vae.config.scaling_factor


def to_picture(pipe, latents):
    """``(1, C, h, w)`` model-space ``latents`` → PIL (decoded by the VAE where there is one)."""
    import torch

    vae = getattr(pipe, "vae", None)
    if vae is not None:
        with torch.no_grad():
            latents = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample  # (1, 3, H, W)
    return pipe.image_processor.postprocess(latents.float(), output_type="pil")[0]


def predicted_clean(pred, noisy, alpha_bar, prediction_type: str):
    """x̂₀ from the U-Net's output at ᾱ (Ho et al., 2020, eq. 15; v: Salimans & Ho, 2022)."""
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noisy - (1 - alpha_bar).sqrt() * pred
    if prediction_type == "sample":
        return pred
    return (noisy - (1 - alpha_bar).sqrt() * pred) / alpha_bar.clamp(min=1e-8).sqrt()


def draws(pipe, tracer, latents, prompt: str, t, samples: int, generator):
    """``samples`` U-Net passes on ``latents`` noised to ``t`` (q(x_t | x_0), fresh noise each); the tracer
    averages their maps. Returns the mean predicted clean image (model space, ``(1, C, h, w)``)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    from .added_conditioning import added_conditioning
    from .inversion import prompt_states

    reader = "the draws mode (samples=N; samples=None denoises instead)"
    states, _ = prompt_states(pipe, prompt, guided=False, reader=reader)  # (1, T, D)
    alpha_bar = pipe.scheduler.alphas_cumprod[int(round(float(t)))].to(latents.device, latents.dtype)
    prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
    tracer.start_call([prompt])
    clean = torch.zeros_like(latents)
    with torch.no_grad(), added_conditioning(pipe, prompt, latents):  # SDXL: its text and time ids
        for _ in range(samples):
            noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
            noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise  # (1, C, h, w)
            pred = pipe.unet(noisy, t, encoder_hidden_states=states).sample
            clean += predicted_clean(pred, noisy, alpha_bar, prediction_type) / samples
    return clean


def denoise(pipe, tracer, latents, prompt: str, strength: float, generator, settings: dict[str, Any]):
    """The img2img run under the tracer: our pipeline's ``image=`` / ``strength=``, diffusers'
    ``AutoPipelineForImage2Image`` (same components; SD3's and Flux's too) for any other. Returns the
    PIL output and the first timestep it denoised from."""
    from ..models.pipeline import CrossAttnPipeline

    common = dict(image=latents, strength=strength, generator=generator, output_type="pil", **settings)
    if isinstance(pipe, CrossAttnPipeline):
        return pipe(prompt, relation_guidance=0, **common).images[0], None
    from diffusers import AutoPipelineForImage2Image

    img2img = AutoPipelineForImage2Image.from_pipe(pipe)  # the same modules: the tracer's processors stay
    img2img.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    tracer.start_call([prompt], settings.get("negative_prompt"))
    tracer.note_call(img2img, prompt=prompt, **common)  # Qwen-Image: a negative prompt is a second call a step
    image = img2img(prompt, **common).images[0]
    scheduler = img2img.scheduler  # img2img starts at its begin index (the strength's share of the steps)
    return image, scheduler.timesteps[getattr(scheduler, "begin_index", None) or 0]


def maps_of_image(
    pipe,
    image,
    prompt: str,
    *,
    strength: float = DEFAULT_STRENGTH,
    samples: int | None = None,
    num_inference_steps: int = SamplingConfig.steps,
    guidance_scale: float = SamplingConfig.guidance_scale,
    negative_prompt: str | None = None,
    generator=None,
    **trace_kwargs,
) -> ImageMaps:
    """The word maps of ``image`` (a path or a PIL image) read with ``prompt`` (see the module's text).

    ``strength`` in (0, 1]: how far the image is noised (the timestep: the first of the last
    ``strength`` share of ``num_inference_steps`` steps). ``samples``: None denoises from there
    (``guidance_scale``, ``negative_prompt`` apply); N ≥ 1 averages N noise draws at that timestep.
    ``trace_kwargs`` go to :func:`crossattn.trace` (``kind``, ``layers``, ``per_step``, ``per_head``).
    A prompt that does not describe the image still runs: its maps show where the words land anyway.
    """
    from ..attention.families import family_of, guided_arguments, pipeline_denoiser
    from ..attention.trace import trace
    from ..errors import BadArgument
    from ..models.pipeline import image_timesteps

    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise ValueError(f"samples {samples!r} is not accepted; give a whole number >= 1, or None to denoise")
    joint = getattr(pipe, "unet", None) is None  # SD3, Flux: flow-matching schedulers, no ᾱ for draws
    if joint and samples is not None:
        raise ValueError(
            f"samples={samples}: the draws mode reads U-Net pipelines (noise at one ᾱ); {type(pipe).__name__} "
            "reads a given image by denoising it (samples=None)"
        )
    denoiser = pipeline_denoiser(pipe)
    family = family_of(denoiser)
    if family is not None and family.image_refusal() is not None:  # Flux.2, PixArt-Σ, Sana
        raise BadArgument(family.image_refusal())
    given, notes = given_picture(pipe, image)
    picture = family is not None and family.given_image == "picture"  # Qwen-Image: its img2img encodes it
    latents = given if picture else image_latents(pipe, given)
    t = None
    if not joint:  # Flux's scheduler sets its steps only with the image's size (mu): img2img says where it began
        pipe.scheduler.set_timesteps(num_inference_steps)
        t = image_timesteps(pipe.scheduler, num_inference_steps, strength)[0]
    settings = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
    settings["negative_prompt"] = negative_prompt
    settings = guided_arguments(family, denoiser, settings)  # Qwen-Image: true CFG
    with trace(pipe, **trace_kwargs) as tracer:
        if samples is None:
            denoised, began = denoise(pipe, tracer, latents, prompt, strength, generator, settings)
            t = t if began is None else began
        else:
            denoised = to_picture(pipe, draws(pipe, tracer, latents, prompt, t, samples, generator))
    mode = "denoise" if samples is None else "draws"
    return ImageMaps(tracer.maps(), given, denoised, int(round(float(t))), mode, notes)


def sample_given(pipe, prompt: str, seed: int, request, image=None) -> ImageMaps:
    """:func:`maps_of_image` of ``request.image`` with the request's settings (a ``SamplingRequest``);
    ``image``: that picture already in hand (a PIL image), read instead of the file."""
    import torch

    return maps_of_image(
        pipe,
        request.image if image is None else image,
        prompt,
        strength=request.strength,
        samples=request.samples,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        negative_prompt=request.negative_prompt,
        generator=torch.Generator(device="cpu").manual_seed(seed),
        **request.maps.trace_kwargs(),
    )


def given_fields(request, result: ImageMaps, denoised: Path) -> dict[str, Any]:
    """Sidecar fields saying which image was read, how, and where the denoised output went."""
    return {
        "given_image": {
            "file": str(request.image),
            "strength": request.strength,
            "samples": request.samples,
            "mode": result.mode,
            "timestep": result.timestep,
            "notes": list(result.notes),
            "denoised": denoised.name,
        }
    }
