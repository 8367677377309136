"""What each model family declares so that one capture mechanism can trace it (DESIGN: "a family declares, one
mechanism captures").

A family is looked up by its denoiser's class name. It says where its text keys sit (a joint ``[text, image]`` or
``[image, text]`` sequence, or a separate ``attn2`` cross-attention), which tokenizer names them
(:mod:`crossattn.attention.text_layout`), how its latent grid is read from the denoiser's input, how classifier-free
guidance runs (one batch ``[uncond, cond]``, or true CFG: a second transformer call per step for the negative prompt,
which must not be averaged into the prompt's maps), which attention modules hold image tokens only (SD3.5's
``attn2``: recorded as self-attention) or have no softmax map at all (Sana's linear ``attn1``), and which surfaces
cannot work on it and why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

#: why prompt-to-prompt (``edit``) cannot work on a family whose text and image share one attention
EDIT_NEEDS_UNET = (
    "attention control (edit) needs a U-Net's separate cross-attention layers, and {name} joins text and image in one "
    "attention; edit works on SD-1.5, SDXL and crossattn models (maps work on every family)"
)


@dataclass(frozen=True)
class Family:
    """One model family's declaration (see the module docstring)."""

    name: str  # as the docs and messages call it
    attention: str  # "joint" (text and image keys in one softmax) or "cross" (a separate attn2: Q image, K/V text)
    tokens: str  # the text layout's name (crossattn.attention.text_layout.LAYOUTS)
    text_first: bool = False  # joint: the sequence is [text, image] (else [image, text])
    grid: str = "sample"  # the latent grid from: "sample" (B, C, h, w), "img_ids" ((N, ·) rows, cols), "img_shapes"
    patch: int = 1  # latent pixels per token side where the pipeline packs latents (Flux, Flux.2, Qwen-Image: 2)
    true_cfg: str | None = None  # the call argument that turns on a second, negative call per step (true CFG)
    guidance: str = "guidance_scale"  # the call argument the user's guidance scale goes to (guided_arguments)
    image_only: tuple[str, ...] = ()  # attention modules (last name part) over image tokens only: recorded as self
    no_softmax: tuple[str, ...] = ()  # attention modules without a softmax map (linear attention): not recorded
    edit: str | None = EDIT_NEEDS_UNET  # why edit cannot work (None: it can)
    binned: bool = False  # the pipeline samples at the nearest size of its aspect-ratio bins, then resizes
    given_image: str = "latents"  # maps --image: "latents" (its VAE's latents noised), "picture" (the family's
    # img2img pipeline encodes the PIL picture: a VAE of its own), or why it cannot (no noising path)

    @property
    def joint(self) -> bool:
        return self.attention == "joint"

    def image_refusal(self) -> str | None:
        """The one line that says why ``maps --image`` cannot run on this family (None where it can)."""
        if self.given_image in ("latents", "picture"):
            return None
        return f"maps --image cannot read a given image with {self.name}: {self.given_image}; its maps of generated images work"

    def edit_refusal(self) -> str | None:
        """The one line that says why ``edit`` cannot run on this family (None where it can)."""
        return None if self.edit is None else self.edit.format(name=self.name)


UNET = Family("U-Net (SD-1.5, SDXL, crossattn)", "cross", "clip", edit=None)
SD3 = Family("SD3 / SD3.5", "joint", "sd3", image_only=("attn2",))
FLUX = Family("Flux", "joint", "flux", text_first=True, grid="img_ids", patch=2, true_cfg="true_cfg_scale")
NO_IMG2IMG = "diffusers has no image-to-image pipeline for it (no noising path without inversion)"
FLUX2 = Family(
    "Flux.2", "joint", "chat", text_first=True, grid="img_ids", patch=2, true_cfg="guidance_scale",
    given_image="its pipeline takes an image as a reference to edit from (extra tokens), not as a noised start",
)  # fmt: skip
#: Flux.2 [dev] (``Flux2Pipeline``): the same transformer, guidance-distilled (``guidance_embeds``: its guidance is an
#: input, one call a step), its keys the Mistral tokens of a system message and the prompt (Mistral Small 3's Tekken)
FLUX2_DEV = replace(FLUX2, name="Flux.2 [dev]", tokens="mistral", true_cfg=None)
QWEN_IMAGE = Family(
    "Qwen-Image", "joint", "qwen-image", text_first=True, grid="img_shapes", patch=2, true_cfg="true_cfg_scale",
    guidance="true_cfg_scale", given_image="picture",
)  # fmt: skip
NOT_A_UNET = EDIT_NEEDS_UNET.replace("joins text and image in one attention", "is a transformer crossattn's control does not drive")  # fmt: skip
PIXART = Family("PixArt-Σ", "cross", "t5", binned=True, edit=NOT_A_UNET, given_image=NO_IMG2IMG)
SANA = Family("Sana", "cross", "gemma", no_softmax=("attn1",), binned=True, edit=NOT_A_UNET, given_image=NO_IMG2IMG)

#: denoiser class name → family
FAMILIES: dict[str, Family] = {
    "UNet2DConditionModel": UNET,
    "SD3Transformer2DModel": SD3,
    "FluxTransformer2DModel": FLUX,
    "Flux2Transformer2DModel": FLUX2,
    "QwenImageTransformer2DModel": QWEN_IMAGE,
    "PixArtTransformer2DModel": PIXART,
    "SanaTransformer2DModel": SANA,
}


#: denoiser class name → (a config flag, the family its models are when the flag is set): one class, two families
VARIANTS: dict[str, tuple[str, Family]] = {"Flux2Transformer2DModel": ("guidance_embeds", FLUX2_DEV)}


def pipeline_denoiser(pipe):
    """A diffusers pipeline's denoiser, its ``unet`` or its ``transformer``; None when it has neither."""
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def family_of(model) -> Family | None:
    """The family of a denoiser (a U-Net or a transformer), by its class name (and for a class two families share,
    a flag of its config: :data:`VARIANTS`); None for any other model."""
    name = type(model).__name__
    if name in VARIANTS and getattr(getattr(model, "config", None), VARIANTS[name][0], False):
        return VARIANTS[name][1]
    return FAMILIES.get(name)


def true_cfg_on(family: Family | None, pipe, arguments: dict[str, Any]) -> bool:
    """Whether a pipeline call with ``arguments`` runs the negative prompt as a second transformer call per step
    (the pipelines' own test: Flux and Qwen-Image ``true_cfg_scale > 1`` with a negative prompt; Flux.2 Klein
    ``guidance_scale > 1`` unless distilled)."""
    if family is None or family.true_cfg is None:
        return False
    scale = arguments.get(family.true_cfg)
    if scale is None or scale <= 1:
        return False
    if family.true_cfg == "guidance_scale":
        return not getattr(getattr(pipe, "config", None), "is_distilled", False)
    return arguments.get("negative_prompt") is not None or arguments.get("negative_prompt_embeds") is not None


def guided_arguments(family: Family | None, denoiser, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` (a crossattn surface's pipeline call: ``guidance_scale``, ``negative_prompt``, ...) with the
    guidance scale sent where the family's pipeline reads it. Qwen-Image's ``guidance_scale`` feeds only
    guidance-distilled transformers (``guidance_embeds``); its classifier-free guidance is true CFG,
    ``true_cfg_scale``, run only with a negative prompt: without one, the negative prompt is "" (the unconditional
    prompt of classifier-free guidance, Ho & Salimans 2022; diffusers' docs say " " works too)."""
    if family is None or family.guidance == "guidance_scale" or "guidance_scale" not in arguments:
        return arguments
    if getattr(getattr(denoiser, "config", None), "guidance_embeds", False):  # guidance-distilled: its own scale
        return arguments
    arguments = dict(arguments)
    scale = arguments.pop("guidance_scale")
    arguments[family.guidance] = scale
    if scale is not None and scale > 1 and arguments.get("negative_prompt") is None:
        arguments["negative_prompt"] = ""
    return arguments


def output_size(family: Family | None, arguments: dict[str, Any]) -> tuple[int, int] | None:
    """The size a binning pipeline (PixArt-Σ, Sana) resizes its image to: the call's ``height`` and ``width`` when
    it bins (``use_resolution_binning``, on by default) and both are given; None when the image is the latents'."""
    if family is None or not family.binned or not arguments.get("use_resolution_binning", True):
        return None
    height, width = arguments.get("height"), arguments.get("width")
    return None if height is None or width is None else (int(height), int(width))


def latent_grid(family: Family | None, sample, kwargs: dict[str, Any]) -> tuple[int, int]:
    """The latent size ``(h, w)`` (in VAE latents) of a denoiser call whose input is ``sample``: the input's own
    last two sides, or for packed ``(B, N, C)`` tokens the grid from the image positions (``img_ids`` rows and
    columns) or ``img_shapes`` (``[(frames, rows, columns)]`` per image) times the packing."""
    if sample.ndim == 4 or family is None or family.grid == "sample":
        return tuple(sample.shape[-2:])
    if family.grid == "img_shapes":
        frames, rows, cols = kwargs["img_shapes"][0][0]  # the first image's (frames, rows, columns)
    else:
        ids = kwargs["img_ids"]
        ids = ids.reshape(-1, ids.shape[-1])  # (N, 3) Flux (0, row, col); (N, 4) Flux.2 (t, row, col, layer)
        rows, cols = int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1
    return family.patch * int(rows), family.patch * int(cols)


def image_tokens(family: Family | None, sample) -> int:
    """How many image tokens a joint transformer's sequence holds for the input ``sample`` (packed
    ``(B, N, C)`` tokens: N; a ``(B, C, h, w)`` latent in patches of ``p``: ``h·w / p²``)."""
    if sample.ndim == 3:
        return int(sample.shape[1])
    return 0  # SD3's processors are given the image tokens apart
