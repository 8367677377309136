"""``EditSettings``: how prompt-to-prompt control edits the target, in one checked object.

The CLI (``crossattn edit``), :func:`crossattn.edit` and :class:`~crossattn.editing.control.Controller`
all take it, so a knob is a field here and nowhere else: its default, its check, the keyword
``edit()`` and ``control()`` accept for it, and its entry in the edit's sidecar. It is checked once,
when built, and frozen, so what passed the check is what runs. Free of torch, so the CLI's parser
reads the defaults without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

HALVES = ("both", "cond")
#: ``pinned_steps`` left as ``None`` is chosen by the inversion: Direct Inversion's pinning for the first
#: 40 % after DDIM inversion (the steps after it sample freely, and there a scene can drift: an export
#: drawing came back at 24.6 dB pinned for 30 %, at 38.9 for 40 %; on 24 pilot scenes, each drawing's
#: six lowest and six more, no edit judgment moved from 30 to 40 %, and one other object was lost at
#: 50 %); after null-text the source row keeps to the path its states were fitted along at every step,
#: since those states act as fitted only there and a guided path drifts: on one Pillow drawing 1e-4 of
#: noise on x_T swapped its two objects (40.7 → 18.4 dB, Adam at 3e-2), and so did the float differences
#: of the edit's batch (docs/commands/edit.md)
PINNED_AFTER_DDIM, PINNED_AFTER_NULL_TEXT = 0.4, 1.0
#: with ``direct_inversion`` the source row is on the path, and the targets corrected alike, at every step
PINNED_DIRECT = 1.0
#: an edit of a given image with these left as ``None`` (issue 41, ``benchmarks/edit_geometry.py``, DDIM, the
#: first 38 drawings): the blend over the object's own pixels on (background PSNR outside the objects 40.6 →
#: 54.7 dB, min 20.5 → 45.6; outline IoU 0.61 → 0.65; the other rates the same); Direct Inversion off (with
#: it the background is exact, but the other object of a two-object drawing was lost in 0.06 of them and an
#: edited object moved in 0.03 more: docs/benchmarks.md); the target on the source's latents for the first 40 %
#: of the steps, not 30 % (SDEdit-like, Meng et al., ICLR 2022; all 100 drawings, DDIM: in place 0.78 → 0.80,
#: outline kept 0.39 → 0.41, attribute 0.78 → 0.80, other unchanged 0.90 both, background min 40.8 → 44.4 dB,
#: no drawing's judgment worse; null-text, 40 drawings: in place 0.80 → 0.82, outline kept 0.30 → 0.35,
#: attribute 0.78 → 0.80, none worse; 50 % and more, Plug-and-Play's features, source_negative and the new
#: colour word re-weighted did not beat it: docs/benchmarks.md, the levers measured on 100 drawings)
GIVEN_IMAGE_DEFAULTS = {
    "direct_inversion": False,
    "object_blend": True,
    "feature_steps": 0.0,
    "shared_steps": 0.4,
    "source_negative": False,
    "recolour": False,
}
#: ``recolour`` left as ``None`` in a *colour* edit of a given image (every changed word a colour's name:
#: :func:`crossattn.editing.colour_words.colour_edit`): on (issue 41's 100 drawings, DDIM, against the object
#: blend alone: in place 0.80 → 1.00, outline kept 0.41 → 0.97, attribute 0.80 → 1.00, other unchanged 0.90 →
#: 1.00, background min 44.4 → 44.9 dB; docs/benchmarks.md, "Recolouring from a reference row")
RECOLOUR_COLOUR_EDITS = True
#: ``shared_steps`` left as ``None`` in an edit of a generated image (docs/benchmarks.md, "Attention control")
SHARED_STEPS = 0.3
#: the knobs that act on an edit of a given image only (a generated edit's sidecar leaves them out)
GIVEN_IMAGE_KNOBS = (
    "pinned_steps",
    "direct_inversion",
    "object_blend",
    "feature_steps",
    "feature_blocks",
    "source_negative",
    "recolour",
    "tune_steps",
)
#: the most ``tune_steps`` an edit accepts: a per-image fit is a few dozen steps (issue 41), not a fine-tune
MAX_TUNE_STEPS = 1000


def check_fraction(name: str, value) -> float:
    """A fraction of the sampling steps: a number in [0, 1], else a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} is {value!r}; accepted: a fraction of the sampling steps from 0 to 1")
    return float(value)


def check_tune_steps(value) -> int:
    """The steps of a per-image fit: a whole number from 0 to :data:`MAX_TUNE_STEPS`, else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TUNE_STEPS:
        raise ValueError(
            f"tune_steps is {value!r}; accepted: a whole number of tuning steps from 0 (none) to {MAX_TUNE_STEPS}"
        )
    return value


@dataclass(frozen=True)
class EditSettings:
    """How the target is controlled (see :mod:`crossattn.editing.control`): ``cross_steps`` /
    ``self_steps``, the fractions of the first steps whose cross- / self-attention maps the target takes
    from the source; ``reweight``, ``{word: factor}`` on the target's attention to its word; ``halves``,
    ``"both"`` or ``"cond"`` (the guidance halves controlled); ``blend``, P2P's local blending;
    ``shared_steps``, the fraction of the first steps in which the target follows the source's latents (the
    edit starts from the source's partly denoised state, SDEdit-like; ``None``: :data:`SHARED_STEPS` for a
    generated image, :data:`GIVEN_IMAGE_DEFAULTS`' for a given one);
    ``pinned_steps``, in an edit of a given image (:func:`crossattn.edit_image`), the fraction of the first
    steps after which the source row is put back on the image's inversion path (Direct Inversion: Ju et
    al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of Code", ICLR 2024), so the
    source's maps and latents, which the target takes, are the given image's (no effect elsewhere);
    ``None``: chosen by the inversion (:meth:`pinned_for`); ``direct_inversion``, during those steps each
    target row is moved by the source row's correction too (:mod:`crossattn.editing.direct_inversion`), so
    the targets keep the given image's geometry instead of only taking its maps; ``object_blend``, the local
    blend's region narrowed to the given image's object under it (every pixel outside the object the
    source's: :func:`crossattn.editing.local_blend.object_region`); each ``None``: on for a given image
    (:data:`GIVEN_IMAGE_DEFAULTS`), without effect on a generated one. ``feature_steps``, the fraction of the
    first steps in which each target takes the source's decoder ResBlock outputs, those of the first
    ``feature_blocks`` decoder up-blocks (Plug-and-Play, Tumanyan et al., CVPR 2023:
    :mod:`crossattn.editing.feature_injection`); ``None``: :data:`GIVEN_IMAGE_DEFAULTS`' for a given image, 0 else.
    ``source_negative``, in an edit of a given image, the targets guided against the source prompt (their
    unconditional half the source caption instead of the negative prompt), as negative-prompt inversion edits
    (Miyake et al., "Negative-prompt Inversion", 2023: the source row's unconditional states are the source
    prompt's after DDIM inversion, and the targets' too), so guidance pushes along the words' difference.
    ``recolour``, in an edit of a given image, the target is the source with the edited object's fill swapped for
    the colour a reference row (the target prompt drawn from fresh noise) gives it, over the given object's shading
    (:mod:`crossattn.editing.recolour`), so a colour edit keeps the object's outline, turn and shading and takes
    only the colour from the model; ``None``: on for a colour edit (every changed word a colour's name,
    :data:`RECOLOUR_COLOUR_EDITS`), off otherwise (a shape edit needs the model's own drawing).
    ``tune_steps``, in an edit of a given image, the steps of a small LoRA fitted on that one image with its
    source caption before it is inverted and edited (UniTune, Valevski et al., 2022; Imagic, Kawar et al., CVPR
    2023: :mod:`crossattn.editing.image_tuning`); 0, the default, fits none (opt-in: on issue 41's 100 drawings,
    DDIM, 30 steps kept more outlines, 0.41 → 0.50, and the other object, 0.90 → 1.00, but the attribute fell
    0.80 → 0.79, and an edit took 4.3× an edit of a generated image: docs/benchmarks.md).
    The defaults are the edit's, measured on the default model (docs/benchmarks.md, "Attention control")."""

    cross_steps: float = 0.8
    self_steps: float = 0.2
    reweight: dict[str, float] = field(default_factory=dict)
    halves: str = "both"
    blend: bool = True
    shared_steps: float | None = None
    pinned_steps: float | None = None
    direct_inversion: bool | None = None
    object_blend: bool | None = None
    feature_steps: float | None = None
    feature_blocks: int = 1
    source_negative: bool | None = None
    recolour: bool | None = None
    tune_steps: int = 0

    def __post_init__(self):
        checked = {
            "cross_steps": check_fraction("cross_steps", self.cross_steps),
            "self_steps": check_fraction("self_steps", self.self_steps),
            "shared_steps": None if self.shared_steps is None else check_fraction("shared_steps", self.shared_steps),
            "pinned_steps": None if self.pinned_steps is None else check_fraction("pinned_steps", self.pinned_steps),
            "feature_steps": None
            if self.feature_steps is None
            else check_fraction("feature_steps", self.feature_steps),
            "reweight": dict(self.reweight or {}),
        }
        for name in ("direct_inversion", "object_blend", "source_negative", "recolour"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} is {getattr(self, name)!r}; accepted: True, False or None (chosen)")
        if isinstance(self.feature_blocks, bool) or not isinstance(self.feature_blocks, int) or self.feature_blocks < 1:
            raise ValueError(
                f"feature_blocks is {self.feature_blocks!r}; accepted: a whole number of decoder blocks >= 1"
            )
        check_tune_steps(self.tune_steps)
        if self.halves not in HALVES:
            raise ValueError(f"halves {self.halves!r}; accepted: {', '.join(HALVES)}")
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    def pinned_for(self, null_text: bool, colour_edit: bool = False) -> EditSettings:
        """These settings as an edit of a given image runs them: ``direct_inversion``, ``object_blend`` and the
        rest left as ``None`` are :data:`GIVEN_IMAGE_DEFAULTS`, but ``recolour`` :data:`RECOLOUR_COLOUR_EDITS`
        in a ``colour_edit``; ``pinned_steps`` left as ``None`` is :data:`PINNED_DIRECT` with Direct Inversion,
        else chosen by how the source path was made: :data:`PINNED_AFTER_NULL_TEXT` after null-text inversion,
        :data:`PINNED_AFTER_DDIM` after DDIM (and for a ``source_path`` given without saying). The one place
        those defaults are chosen."""
        defaults = {**GIVEN_IMAGE_DEFAULTS, **({"recolour": RECOLOUR_COLOUR_EDITS} if colour_edit else {})}
        chosen = {name: defaults[name] if getattr(self, name) is None else getattr(self, name) for name in defaults}
        pinned = self.pinned_steps
        if pinned is None:  # with Direct Inversion the targets follow the path's corrections at every step
            pinned = (
                PINNED_DIRECT
                if chosen["direct_inversion"]
                else PINNED_AFTER_NULL_TEXT
                if null_text
                else PINNED_AFTER_DDIM
            )
        return replace(self, pinned_steps=pinned, **chosen)

    @property
    def feature_fraction(self) -> float:
        """``feature_steps`` as run: ``None`` (a generated edit's: no injection) is 0."""
        return self.feature_steps or 0.0

    @property
    def shared_fraction(self) -> float:
        """``shared_steps`` as run: ``None`` (not chosen for a given image) is a generated edit's
        :data:`SHARED_STEPS`."""
        return SHARED_STEPS if self.shared_steps is None else self.shared_steps

    def generated(self) -> EditSettings:
        """These settings as an edit of a generated image runs (and records) them: ``shared_steps`` chosen;
        ``tune_steps`` is refused (a ``ValueError``): there is no given image to fit."""
        if self.tune_steps:
            raise ValueError(
                f"tune_steps is {self.tune_steps}: it fits the model to a given image; an edit of a generated "
                "image has none (edit a given image with crossattn.edit_image, or leave tune_steps 0)"
            )
        return replace(self, shared_steps=self.shared_fraction)

    @classmethod
    def knobs(cls) -> tuple[str, ...]:
        """The field names: the keyword arguments ``edit()`` and ``control()`` accept for them."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def taken(cls, settings: EditSettings | None, kwargs: dict) -> EditSettings:
        """:meth:`resolve` over the knobs among ``kwargs``, which are taken out of it (the rest stay, for
        the pipeline): how :func:`crossattn.edit` and :func:`crossattn.edit_image` read their keywords."""
        return cls.resolve(settings, {name: kwargs.pop(name) for name in cls.knobs() if name in kwargs})

    @classmethod
    def resolve(cls, settings: EditSettings | None, knobs: dict, defaults: dict | None = None) -> EditSettings:
        """``settings`` as given, or built from keyword ``knobs`` over ``defaults`` (each a field name).
        Both at once is a ``ValueError``; an unknown keyword a ``TypeError`` naming the accepted ones."""
        unknown = sorted(set(knobs) - set(cls.knobs()))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; accepted: {', '.join(cls.knobs())}")
        if settings is None:
            return cls(**{**(defaults or {}), **knobs})
        if not isinstance(settings, cls):
            raise ValueError(f"settings must be an EditSettings, got {type(settings).__name__}")
        if knobs:
            raise ValueError(f"pass settings= or its fields ({', '.join(sorted(knobs))}), not both")
        return settings
