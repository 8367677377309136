"""One traced sampling per request, and the files ``crossattn generate --maps`` writes for it.

The model loads once (:meth:`Explorer.load`; any family: SD-1.5, SDXL, SD3, Flux, crossattn); every
request gets its own pipeline object (sharing the loaded denoiser and text encoders) with a fresh
scheduler and its own tracer, so a request's maps and scheduler state never leak into another's.
The server samples at one size (``serve --height/--width``, checked once at load; default the
model's own); a request may name another, checked against the model as ``generate`` checks it.
Requests that trace are serialised by the Gradio queue (the tracer installs processors on the
shared denoiser; a second trace at once is an error).

Byte-for-byte the same files as the CLI: the request records cross-attention per step and per head
(for the step slider and head view) and self-attention (for the pixel view), then replays the
per-step, per-head cross-attention through an :class:`AttentionStore` without that detail. The store
does the same float operations in the same order as a plain ``trace(pipe)`` would have, so the
``.maps.safetensors`` equals ``generate --maps``'s; the PNG, sidecar and maps are then written by
the library's (:mod:`crossattn.sampling`: ``plan``, ``image_sidecar``, ``write_image``, ``write_maps``),
from the same :class:`~crossattn.sampling.SamplingRequest` the CLI builds.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SamplingConfig, check_strength, whole
from ..errors import BadArgument
from ..sampling import MapsOptions, ModelRef, SamplingRequest
from ..sampling.request import CONFIG_FIELDS, DEFAULT_STRENGTH

DEFAULT_SCHEDULER = "default"  # the page's name for the model folder's own scheduler (SamplingConfig's None)
#: The server's limits, bounding one request's work (the sampler settings' own checks are SamplingConfig's)
MAX_STEPS = 200
MAX_PROMPT_CHARS = 1000
MAX_SIDE = 4096  # pixels: a bigger side is refused before the model would run out of memory
KEEP_REQUESTS = 32  # request folders kept on disk (older ones are removed)
UPLOAD = "upload.png"  # an uploaded image, as received, in its request folder (the CLI's --image FILE)


def check_prompt(text: str, name: str, tokenizer, max_length: int) -> str:
    """``text`` stripped; a ``ValueError`` naming ``name`` when it is empty or longer than the encoder reads."""
    prompt = (text or "").strip()
    if not prompt:
        raise ValueError(f"the {name} is empty; describe the image, e.g. 'a red circle left of a blue square'")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the {name} is {len(prompt)} characters long; at most {MAX_PROMPT_CHARS} are accepted")
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    if len(ids) > max_length - 2:
        dropped = tokenizer.decode(ids[max_length - 2 :]).strip()
        raise ValueError(
            f"the {name} is too long: {len(ids)} tokens, the text encoder reads {max_length - 2}; "
            f"shorten it (these words would be dropped: {dropped!r})"
        )
    return prompt


def served(**page) -> SamplingConfig:
    """The sampler settings of one page request, given by the page's (and the CLI's) names
    (:data:`~crossattn.sampling.request.CONFIG_FIELDS`: ``seed``, ``steps``, ``guidance``, ``scheduler``,
    :data:`DEFAULT_SCHEDULER` for the folder's own, ``relation_guidance``), the rest at
    :class:`~crossattn.config.SamplingConfig`'s defaults: checked there, as every front's are, then against
    the server's step limit."""
    scheduler = page.pop("scheduler", DEFAULT_SCHEDULER)
    page["scheduler"] = None if scheduler == DEFAULT_SCHEDULER else scheduler
    config = SamplingConfig(**{CONFIG_FIELDS[name]: value for name, value in page.items()})
    whole(config.steps, "steps", 1, high=MAX_STEPS)  # the server's bound on one request's work
    return config


@dataclass(frozen=True)
class Request:
    """What one ``/generate`` or ``/edit`` call asks for: a prompt, the sampler settings (a
    :class:`~crossattn.config.SamplingConfig`, checked when made: :func:`served`) and, for ``/generate``, an
    upload or a size. :meth:`check` checks the rest against the model (a ``ValueError`` naming the value)."""

    prompt: str
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    negative_prompt: str = ""
    image: object = None  # an uploaded PIL image: its maps instead of a sampled image's
    strength: float = DEFAULT_STRENGTH  # with image: how far it is noised, in (0, 1] (maps --image --strength)
    height: int | None = None  # pixels; None or 0: the server's size (Explorer.check fills it in)
    width: int | None = None
    compare_base: bool = False  # also the base model (serve --lora without it), same seed: maps --compare-base

    @classmethod
    def of(cls, prompt: str, **page) -> Request:
        """A request from the page's values by the page's names (``/generate``'s parameters): the sampler
        settings among them (:data:`~crossattn.sampling.request.CONFIG_FIELDS`) made by :func:`served`, the rest
        this request's fields."""
        settings = {name: page.pop(name) for name in CONFIG_FIELDS if name in page}
        return cls(prompt, served(**settings), **page)

    def check(self, tokenizer, max_length: int) -> Request:
        """Validated copy (sizes as ``int``); errors name the bad value and what is accepted."""
        if not isinstance(self.sampling, SamplingConfig):
            raise BadArgument(f"sampling {self.sampling!r} is not accepted; give a SamplingConfig (see served())")
        check_prompt(self.prompt, "prompt", tokenizer, max_length)  # sampled as given, as the CLI samples it
        if self.image is not None and self.compare_base:
            raise ValueError("comparing with the base model draws generated images; remove the uploaded image")
        if self.image is not None and (self.height or self.width):
            raise ValueError(
                f"height {self.height!r} / width {self.width!r} with an image: an uploaded image is read at the "
                "model's own size; leave height and width at 0 (or None)"
            )
        return dataclasses.replace(
            self,
            negative_prompt=self.negative_prompt or "",
            image=_picture(self.image),
            strength=DEFAULT_STRENGTH if self.image is None else check_strength(self.strength),
            height=_side(self.height, "height"),
            width=_side(self.width, "width"),
        )

    def sampling_request(self, out: Path, image: Path | None = None) -> SamplingRequest:
        """The request ``crossattn generate --maps`` builds for these settings, writing to ``out`` (with
        ``image``, the uploaded image's file: ``crossattn maps --image``'s, relation guidance off, the model's
        own size); its maps record self-attention and per-step, per-head detail for the page (the files get
        the plain ones)."""
        sized = {"height": self.height, "width": self.width}
        given = {"image": image, "strength": self.strength} if image is not None else sized
        return SamplingRequest.with_config(
            (self.prompt,),
            self.sampling,
            negative_prompt=self.negative_prompt or None,
            maps=MapsOptions(kind="both", per_step=True, per_head=True),
            out=out,
            **given,
        )


def _side(value, name: str) -> int | None:
    """None (the server's size; 0 says the same, as the page's number box sends it) or a whole number of
    pixels; the model's multiple is checked by the explorer (:meth:`Explorer.check`)."""
    return None if value is None or value == 0 else whole(value, name, 0, high=MAX_SIDE)


def _picture(image):
    """None or a PIL image (Gradio hands an upload over as one); anything else is a ``ValueError``."""
    from PIL import Image

    if image is not None and not isinstance(image, Image.Image):
        raise ValueError(f"the image is a {type(image).__name__}; give an image file (PNG, JPEG, ...)")
    return image


def save_upload(image, path: Path) -> Path:
    """Write an upload as PNG, as it came; a mode PNG cannot hold (CMYK, YCbCr, PA, ...) is written as the
    RGB the model reads (``to_rgb``, what :func:`~crossattn.maps_of_image` converts it to), so that
    ``crossattn maps --image`` on the file reads the same picture; one Pillow cannot convert either (``La``) is a
    :class:`~crossattn.errors.BadImage` naming it."""
    from ..files import atomic_write
    from ..sampling.given_image import rgb

    try:
        return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    except OSError:  # "cannot write mode CMYK as PNG"
        converted = rgb(image)
        return atomic_write(path, lambda tmp: converted.save(tmp, format="PNG"))


@dataclass
class Result:
    """One request's image, the files written for it, and the maps the page draws. With an uploaded
    image, ``image`` is that image as the model read it (RGB, the model's size): every view is drawn on it."""

    request: Request
    image: object  # PIL image: the request's size (an upload: the model's own)
    files: list[Path]  # .png, .json, .maps.safetensors, .maps.json, .maps.png, .maps.html (and see run_image)
    cross: object  # AttentionMaps: cross-attention, per step and per head
    self_mean: object  # AttentionMaps: self-attention, mean over steps and heads (None: linear, Sana)
    words: list[str] = field(default_factory=list)
    denoised: object = None  # with an uploaded image: what the model made of it (PIL)
    base: object = None  # with compare_base: the base model's image, maps and numbers (sampling.compare.BaseComparison)


def aggregate(maps, kind: str):
    """The maps ``trace(pipe, kind=kind)`` (no per-step, no per-head detail) would have recorded.

    Each recorded step goes through a fresh :class:`AttentionStore` exactly as the capture processor
    hands it over, ``(R*heads, N, K)``, so the running sums are the very same float operations.
    """
    from ..attention.maps import AttentionMaps
    from ..attention.store import AttentionStore

    if kind == "self" and all(layer["kind"] != "self" for layer in maps.meta["layers"].values()):
        return None  # Sana: its self-attention is linear, there is no map of it
    names = maps.select(None, kind)
    store = AttentionStore(maps.meta["guidance_half"])  # images unknown: every recorded row is kept
    for name in names:
        t = maps.tensors[name]  # (S, R, heads, N, K)
        steps, rows, heads, n, k = t.shape
        for s in range(steps):
            store(name, t[s].reshape(rows * heads, n, k), heads)  # (R*heads, N, K)
    meta = {
        **maps.meta,
        "layers": {name: maps.meta["layers"][name] for name in names},
        "per_step": False,
        "per_head": False,
    }
    return AttentionMaps({name: store.tensor(name) for name in names}, meta)


def only(maps, kind: str):
    """The layers of one kind, with their detail as recorded."""
    from ..attention.maps import AttentionMaps

    names = maps.select(None, kind)
    meta = {**maps.meta, "layers": {name: maps.meta["layers"][name] for name in names}}
    return AttentionMaps({name: maps.tensors[name] for name in names}, meta)


class Explorer:
    """The loaded model, the size it samples at and where request files go; :meth:`run` serves one request."""

    def __init__(
        self, pipe, model: str | ModelRef | None = None, lora: str | None = None, out=None, height=None, width=None
    ):
        from ..sampling.sizes import check_size

        self.pipe = pipe
        self.height, self.width = check_size(pipe, height, width)  # once; None: the model's own size
        self.model_ref = model if isinstance(model, ModelRef) else ModelRef.resolve(model, lora)
        self.vocabulary = self.model_ref.vocabulary()  # words the model saw in training (None: unknown)
        self.scheduler = pipe.scheduler  # the folder's own; each request samples with a fresh copy
        self.out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="crossattn-serve-"))
        if out is None:
            atexit.register(shutil.rmtree, self.out, True)

    @property
    def identity(self) -> dict:
        """The sidecars' ``model`` field."""
        return self.model_ref.identity()

    @classmethod
    def load(cls, model=None, lora=None, device=None, out=None, dtype=None, height=None, width=None) -> Explorer:
        """Load ``model`` (+ ``lora``) on ``device`` in ``dtype`` (``serve --dtype``); requests sample at
        ``height`` × ``width`` pixels (None: the model's own). Bad values are a ``ValueError`` naming them."""
        from ..sampling import check_unet
        from ..sampling.request import check_dtype

        ref = ModelRef.resolve(model, lora)
        pipe = ref.load(device=device, dtype=check_dtype(dtype, device))
        check_unet(pipe)
        return cls(pipe, ref, out=out, height=height, width=width)

    @property
    def max_length(self) -> int:
        pipe = self.pipe
        return getattr(pipe, "max_length", None) or pipe.tokenizer.model_max_length

    def request_pipe(self, scheduler: str | None):
        """A pipeline object for one request: the loaded components, a new scheduler in its initial state
        (``scheduler``: a name, as ``generate --scheduler``; None: the folder's own)."""
        from ..models.model import fresh_scheduler

        fresh = fresh_scheduler(self.scheduler, scheduler)
        pipe = type(self.pipe)(**{**self.pipe.components, "scheduler": fresh})
        pipe.set_progress_bar_config(**getattr(self.pipe, "_progress_bar_config", {}))
        return pipe

    def check(self, request: Request) -> Request:
        """``request`` checked (:meth:`Request.check`), sized: the server's height and width where it names
        none, a size the model does not take a ``ValueError`` naming it (as ``generate --height`` says).
        An upload keeps no size (it is read at the model's own)."""
        from ..sampling.sizes import check_size

        request = request.check(self.pipe.tokenizer, self.max_length)
        if request.image is not None:
            return request
        height = self.height if request.height is None else request.height
        width = self.width if request.width is None else request.width
        height, width = check_size(self.pipe, height, width)
        return dataclasses.replace(request, height=height, width=width)

    def run(self, request: Request) -> Result:
        """Check, sample once inside a trace, write the CLI's files; bad input raises ``ValueError``.
        With ``request.image``: that image's maps instead (:meth:`run_image`)."""
        from ..models.vocabulary import warn_unknown_words
        from ..sampling import plan, sample

        request = self.check(request)
        warn_unknown_words([request.prompt], self.vocabulary)  # as the CLI does; the page shows it
        if request.image is not None:
            return self.run_image(request)
        job_request = request.sampling_request(self.out / uuid.uuid4().hex)
        (job,) = plan(job_request)
        pipe = self.request_pipe(request.sampling.scheduler)
        images, maps = sample(pipe, [job], job_request)
        cross = only(maps, "cross")
        base = self.compare(pipe, job, job_request, cross) if request.compare_base else None
        files = self.write_files(pipe, job_request, job, images[0], maps, cross, base)
        return Result(request, images[0], files, cross, aggregate(maps, "self"), cross.words_for(0), base=base)

    def compare(self, pipe, job, job_request: SamplingRequest, cross):
        """The same job with the LoRA off (:func:`~crossattn.sampling.compare.compare_with_base`, as ``maps
        --compare-base`` draws it): its cross-attention, per step and head like ``cross``, and each word's numbers."""
        from ..sampling.compare import compare_with_base

        crossed = dataclasses.replace(job_request, maps=dataclasses.replace(job_request.maps, kind="cross"))
        return compare_with_base(pipe, job, crossed, self.model_ref, cross, list(dict.fromkeys(cross.words_for(0))))

    def run_image(self, request: Request) -> Result:
        """The maps of a checked request's uploaded image, as ``crossattn maps PROMPT --image upload.png``
        reads it (:func:`~crossattn.maps_of_image`, the same settings; relation guidance off).

        Writes, in a new request folder: ``upload.png`` (the image as uploaded; see :func:`save_upload`) and, for the stem
        ``<slug>-upload-<seed>`` the CLI gives that file, ``.png`` (the image as the model read it: RGB, the
        model's size), ``.json`` (its ``given_image`` names ``upload.png``), ``.maps.safetensors``,
        ``.maps.json``, ``.maps.png``, ``.denoised.png`` (what the model made of it) and the ``.maps.html``
        view; not the CLI's ``.grid.png`` (the page draws the grid). Conversion notes are ``UserWarning``s.
        """
        from ..files import slugify
        from ..sampling import ImageJob
        from ..sampling.given_image import sample_given

        folder = self.out / uuid.uuid4().hex
        upload = save_upload(request.image, folder / UPLOAD)
        job_request = request.sampling_request(folder, image=upload)
        seed = request.sampling.seed
        stem = folder / f"{slugify(request.prompt)}-{slugify(upload.stem)}-{seed}"  # as `maps --image`
        job = ImageJob(request.prompt, 0, seed, stem.with_suffix(".png"), stem.with_suffix(".json"), None)
        pipe = self.request_pipe(request.sampling.scheduler)
        # `maps --image`'s call, with the upload itself (its notes name no server path)
        given = sample_given(pipe, request.prompt, seed, job_request, image=request.image)
        cross = only(given.maps, "cross")
        files = self.write_given_files(pipe, job_request, job, given, cross) + [upload]
        return Result(
            request, given.image, files, cross, aggregate(given.maps, "self"), cross.words_for(0), given.denoised
        )

    def write_files(self, pipe, job_request: SamplingRequest, job, image, maps, cross, base=None) -> list[Path]:
        """The files of ``crossattn generate --maps`` (same names, same bytes), plus the ``.maps.html`` view; with
        ``base`` (:meth:`compare`) the page shows both models and ``maps --compare-base``'s files follow."""
        from ..attention.html import write_html
        from ..sampling import image_sidecar, write_image, write_maps
        from ..sampling.compare import html_arguments, write_comparison

        meta = image_sidecar(pipe, job, job_request, self.model_ref, image.size)  # as generate does
        written = write_image(job, image, meta)
        tuned = aggregate(maps, "cross").subset([0])
        written += write_maps(tuned, image, job.png, meta)
        written.append(write_html(cross, job.png.with_suffix(".maps.html"), image, **html_arguments(base)))
        if base is not None:
            plain = dataclasses.replace(base, maps=aggregate(base.maps, "cross").subset([0]))
            words = list(base.numbers)
            written += write_comparison(pipe, job, job_request, self.model_ref, (image, tuned), plain, words)
        self.prune()
        return written

    def write_given_files(self, pipe, job_request: SamplingRequest, job, given, cross) -> list[Path]:
        """``crossattn maps --image``'s files for an upload (see :meth:`run_image`), plus ``.maps.html``."""
        from ..attention.html import write_html
        from ..files import atomic_write
        from ..sampling import image_sidecar, write_image, write_maps
        from ..sampling.given_image import given_fields

        denoised = job.png.with_suffix(".denoised.png")
        meta = image_sidecar(pipe, job, job_request, self.model_ref, given.image.size)
        meta.update(given_fields(job_request, given, denoised))
        meta["given_image"]["file"] = UPLOAD  # the file beside it, not the server's temporary path
        written = write_image(job, given.image, meta)
        words = list(dict.fromkeys(cross.words_for(0)))  # each word once, as `maps` draws its row
        written += write_maps(aggregate(given.maps, "cross"), given.image, job.png, meta, words)
        written.append(atomic_write(denoised, lambda tmp: given.denoised.save(tmp, format="PNG")))
        written.append(write_html(cross, job.png.with_suffix(".maps.html"), given.image))
        self.prune()
        return written

    def prune(self) -> None:
        """Remove all but the newest :data:`KEEP_REQUESTS` request folders (Gradio has its own copies)."""
        folders = sorted((p for p in self.out.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in folders[:-KEEP_REQUESTS]:
            shutil.rmtree(old, ignore_errors=True)
