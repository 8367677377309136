"""The sampling request: every setting of one sampling job, typed and checked once.

``crossattn generate``, ``maps``, ``edit`` and ``eval``, the web explorer and notebooks all describe
what to sample with a :class:`SamplingRequest`, so a setting added here (a field, its check in
:meth:`SamplingRequest.__post_init__`, and where :meth:`SamplingRequest.pipeline_kwargs` or the
sidecar reads it) reaches every front at once. A command-line flag whose ``dest`` is the field's
name (or the field's ``metadata["flag"]``) fills it through :meth:`SamplingRequest.from_flags`
without further code.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import SamplingConfig, check_scheduler, check_strength, whole  # noqa: F401 (check_scheduler: re-exported)
from ..errors import BadArgument

#: Images sampled together when ``batch_size`` is None. On CPU throughput grows with the batch up to
#: about this size at 32×32 (benchmarks/generate_throughput.py); memory stays far below 1 GB.
DEFAULT_BATCH_SIZE = 16
#: How far a given image is noised when no strength is named (crossattn.maps_of_image): half the
#: schedule keeps the image's layout while the model still has work to do.
DEFAULT_STRENGTH = 0.5
KINDS = ("cross", "self", "both")
#: torch dtypes a pipeline may be loaded in (``--dtype``); float16 needs a GPU.
DTYPES = ("float32", "float16", "bfloat16")
#: A request's sampler fields (named as the CLI's flags and the page's inputs) → their SamplingConfig names:
#: the one place the two spellings meet
CONFIG_FIELDS = {
    "seed": "seed",
    "steps": "steps",
    "guidance": "guidance_scale",
    "scheduler": "scheduler",
    "relation_guidance": "relation_guidance",
}
#: The most images per prompt in one request (each is planned before the first is sampled).
MAX_IMAGES = 10_000
#: The most noise draws of ``samples`` (one U-Net pass each), as steps are at most 1000.
MAX_SAMPLES = 1000
#: The most null-text optimiser steps per sampling step (Mokady et al. use 10; each is a U-Net forward and backward).
MAX_NULL_TEXT_STEPS = 1000
#: The largest side in pixels: a 16x100000 image fits in memory (fused attention) but samples for hours on a CPU.
MAX_SIDE = 4096


def check_dtype(name: str | None, device: str | None) -> str | None:
    """``name`` is None (float32) or one of :data:`DTYPES` that ``device`` computes in (float16 needs a GPU)."""
    if name is None:
        return None
    if name not in DTYPES:
        raise BadArgument(f"dtype {name!r} is not accepted; choices: {', '.join(DTYPES)}")
    on_cpu = device is None or str(device).startswith("cpu")
    if name == "float16" and on_cpu:
        raise BadArgument("dtype float16 needs a GPU device (--device cuda or mps); on CPU use float32 or bfloat16")
    return name


def check_text(text: Any, name: str) -> str:
    """``text`` if it is a string of printable text (tabs and line breaks count as spaces); a
    ``BadArgument`` naming it otherwise: control characters would reach the terminal and the files
    (sidecars, names), and lone surrogates cannot be written as UTF-8."""
    if not isinstance(text, str):
        raise BadArgument(f"{name} {text!r} is not accepted; {name}s are strings")
    for i, char in enumerate(text):
        if char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cs"):
            raise BadArgument(
                f"{name} {text[:60]!r} has an unprintable character (U+{ord(char):04X} at position {i}); "
                "give printable text (tabs and line breaks count as spaces)"
            )
    return text


def check_prompts(prompts: Any) -> tuple[str, ...]:
    """``prompts`` (one string or several) as a tuple of non-empty printable prompts; a ``BadArgument``
    naming the first bad one otherwise (an empty prompt has no words to draw or map)."""
    prompts = (prompts,) if isinstance(prompts, str) else tuple(prompts)  # none: the job brings its own (eval)
    for prompt in prompts:
        if not check_text(prompt, "prompt").strip():
            raise BadArgument(f"prompt {prompt!r} is empty; give at least one word, e.g. 'a red circle'")
    return prompts


def _from_flags(cls, flags: Mapping[str, Any], fields: dict[str, Any]):
    """``cls`` built from the flags named like its fields (or their ``metadata["flag"]``), then ``fields``."""
    values = {}
    for f in dataclasses.fields(cls):
        flag = f.metadata.get("flag", f.name)  # None: no flag fills this field
        if flag is not None and flag in flags and flags[flag] is not None:
            values[f.name] = flags[flag]
    return cls(**{**values, **fields})


@dataclass(frozen=True)
class MapsOptions:
    """Which attention maps a sampling job records and draws (see :func:`crossattn.trace`).

    ``self_attn_pixel`` also records self-attention; ``html`` records per-head maps for the page's
    head selector; ``gif`` (one animation per word) needs ``per_step``.
    """

    layers: tuple[str | int, ...] | None = None  # resolutions or name patterns; None: every layer
    words: tuple[str, ...] | None = None  # None: every word of the prompt
    per_step: bool = False
    gif: bool = False
    html: bool = False
    self_attn_pixel: tuple[int, int] | None = None
    kind: str | None = None  # None: "both" with self_attn_pixel, else "cross"
    per_head: bool | None = None  # None: as html

    def __post_init__(self) -> None:
        if self.gif and not self.per_step:
            raise BadArgument("--gif needs --per-step (the animation shows one frame per sampling step)")
        if self.kind is not None and self.kind not in KINDS:
            raise BadArgument(f"maps kind {self.kind!r} is not accepted; choices: {', '.join(KINDS)}")
        for name in ("layers", "words"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(value) if value else None)
        if self.self_attn_pixel is not None:
            pixel = tuple(whole(v, "self-attention pixel coordinate", 0) for v in self.self_attn_pixel)
            if len(pixel) != 2:
                raise BadArgument(f"self_attn_pixel {self.self_attn_pixel!r} is not accepted; give (X, Y)")
            object.__setattr__(self, "self_attn_pixel", pixel)

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any], **fields: Any) -> MapsOptions:
        """Options from ``vars(args)`` of a command line (flags named like the fields), then ``fields``."""
        return _from_flags(cls, flags, fields)

    def trace_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`crossattn.trace` these options stand for."""
        return {
            "kind": self.kind or ("both" if self.self_attn_pixel else "cross"),
            "layers": list(self.layers) if self.layers else None,
            "per_step": self.per_step,
            "per_head": self.html if self.per_head is None else self.per_head,
        }


@dataclass(frozen=True)
class SamplingRequest:
    """What one sampling job makes: prompts, sampler settings, maps and where the files go.

    Constructing it checks every value (a ``ValueError`` names the bad value and what is accepted),
    so a request that exists is a valid one; it holds no model (see :class:`~crossattn.sampling.ModelRef`).
    """

    prompts: tuple[str, ...] = field(metadata={"flag": None})  # each command reads its own
    negative_prompt: str | None = field(default=None, metadata={"flag": "negative"})
    seed: int = SamplingConfig.seed  # image i of a prompt starts from seed + i
    steps: int = SamplingConfig.steps
    guidance: float = SamplingConfig.guidance_scale
    scheduler: str | None = SamplingConfig.scheduler  # None: the model folder's own
    relation_guidance: float = SamplingConfig.relation_guidance
    num_images: int = 1  # images per prompt
    batch_size: int | None = None  # images sampled together; None: DEFAULT_BATCH_SIZE
    upscale: int | None = None  # also write a K× nearest-neighbour copy
    maps: MapsOptions | None = field(default=None, metadata={"flag": None})  # None: no attention maps
    out: Path = Path("outputs")
    overwrite: bool = False
    device: str | None = None  # torch device; None: where the pipeline loads (CPU)
    dtype: str | None = None  # one of DTYPES; None: float32
    height: int | None = None  # image height in pixels; None: the model's own (crossattn.sampling.sizes)
    width: int | None = None  # image width in pixels; None: the model's own
    image: Path | None = None  # maps of this image instead of a generated one (crossattn.maps_of_image)
    strength: float | None = None  # with image: how far it is noised, in (0, 1]; None: DEFAULT_STRENGTH
    samples: int | None = None  # with image: N noise draws at one timestep instead of denoising
    null_text_steps: int | None = None  # edit with image: null-text inversion, at most N Adam steps a step

    def __post_init__(self) -> None:
        self._check_image()
        prompts = check_prompts(self.prompts)
        if self.negative_prompt is not None:
            check_text(self.negative_prompt, "negative prompt")
        config = self.config  # the sampler settings, checked where they are defined
        checked = {
            "prompts": prompts,
            "seed": config.seed,
            "steps": config.steps,
            "guidance": config.guidance_scale,
            "relation_guidance": config.relation_guidance,
            "num_images": whole(self.num_images, "num_images", 1, high=MAX_IMAGES),
            "batch_size": whole(self.batch_size, "batch_size", 1, optional=True),
            "upscale": whole(self.upscale, "upscale", 1, optional=True),
            "height": whole(self.height, "height", 1, optional=True, high=MAX_SIDE),
            "width": whole(self.width, "width", 1, optional=True, high=MAX_SIDE),
            "dtype": check_dtype(self.dtype, self.device),
            "out": Path(self.out),
        }
        if self.maps is not None and not isinstance(self.maps, MapsOptions):
            raise BadArgument(f"maps {self.maps!r} is not accepted; give MapsOptions(...) or None")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def _check_image(self) -> None:
        """``image`` exists; ``strength`` in (0, 1] and ``samples`` >= 1 come with it. With an image,
        relation guidance is off: it would move the objects away from where the image has them."""
        if self.image is None:
            named = ("strength", "samples", "null_text_steps")
            given = [f"{n} {getattr(self, n)!r}" for n in named if getattr(self, n) is not None]
            if given:
                raise BadArgument(f"{given[0]} needs an image to read (--image FILE)")
            return
        if self.height is not None or self.width is not None:
            raise BadArgument(
                f"height {self.height!r} / width {self.width!r} with an image: a given image is read at the "
                "model's own size; leave --height and --width out"
            )
        path = Path(self.image)
        if not path.is_file():
            from ..errors import BadImage, MissingFile

            error, why = (BadImage, "is a folder") if path.exists() else (MissingFile, "does not exist")
            raise error(f"image {path} {why}; give an image file (PNG, JPEG, ...)")
        strength = DEFAULT_STRENGTH if self.strength is None else check_strength(self.strength)
        object.__setattr__(self, "image", path)
        object.__setattr__(self, "strength", strength)
        object.__setattr__(self, "samples", whole(self.samples, "samples", 1, optional=True, high=MAX_SAMPLES))
        object.__setattr__(
            self,
            "null_text_steps",
            whole(self.null_text_steps, "null_text_steps", 1, optional=True, high=MAX_NULL_TEXT_STEPS),
        )
        object.__setattr__(self, "relation_guidance", 0.0)

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any], **fields: Any) -> SamplingRequest:
        """A request from ``vars(args)`` of a command line: each field takes the flag of its name
        (``negative_prompt`` the ``--negative`` flag), unless given in ``fields``; flags left at None
        keep the field's default."""
        return _from_flags(cls, flags, fields)

    def replace(self, **changes: Any) -> SamplingRequest:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)

    def check_fits(self, pipe) -> None:
        """Refuse, with the estimate (:mod:`crossattn.sampling.memory`), a size, batch or upscale factor
        this machine's free memory cannot hold; checked once the model is known (its own size, its
        attention). On a GPU device only the upscaled copy is counted (it is made on the CPU)."""
        from .memory import available_bytes, gigabytes, sampling_bytes
        from .sizes import default_size

        free = available_bytes()
        if free is None:
            return
        own = default_size(pipe)
        height, width = self.height or own[0], self.width or own[1]
        batch = min(self.batch_size or DEFAULT_BATCH_SIZE, self.num_images * len(self.prompts))
        on_cpu = self.device is None or str(self.device).startswith("cpu")
        maps = self.maps
        full = maps is not None and (maps.self_attn_pixel is not None or maps.kind in ("self", "both"))
        need = sampling_bytes(pipe, height, width, batch if on_cpu else 0, self.upscale, full=full)
        if need > free:
            k = f", upscaled {self.upscale}x to {height * self.upscale}x{width * self.upscale}," if self.upscale else ""
            raise BadArgument(
                f"sampling {batch} image{'s' * (batch > 1)} of {height}x{width} at a time{k} needs about "
                f"{gigabytes(need)} of memory; this machine has {gigabytes(free)} free: give a smaller "
                "--height/--width, --batch-size or --upscale"
            )

    @classmethod
    def with_config(cls, prompts, config: SamplingConfig, **fields: Any) -> SamplingRequest:
        """A request for ``prompts`` with ``config``'s sampler settings and ``fields`` (the inverse of :attr:`config`)."""
        return cls(prompts=prompts, **{name: getattr(config, key) for name, key in CONFIG_FIELDS.items()}, **fields)

    @property
    def config(self) -> SamplingConfig:
        """The sampler settings of this request (seed, steps, guidance, scheduler, relation guidance)."""
        return SamplingConfig(**{key: getattr(self, name) for name, key in CONFIG_FIELDS.items()})

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The settings every pipeline call of this job passes (prompts and generators apart)."""
        kwargs = {"negative_prompt": self.negative_prompt, **self.config.pipeline_kwargs()}
        sizes = {"height": self.height, "width": self.width}
        return {**kwargs, **{k: v for k, v in sizes.items() if v is not None}}
