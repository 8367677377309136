"""The edit settings ``edit_geometry.py --variants`` compares (issue 41): ``crossattn.edit_image`` keywords by name.

``default`` (what a user gets) comes first; the others are the levers measured against it (docs/benchmarks.md,
"Edits that keep a given image's geometry"), the ones that lost kept so their rows can be re-run. Each is
the default with its own knobs changed: the rows measured on 2026-12-07 ran on the default of then
(``shared_steps`` 0.3, now ``shared0.3``); a variant that names no ``shared_steps`` runs on today's 0.4.
"""

from __future__ import annotations

COLOUR_WEIGHT = "colour_weight"  # a variant's key: re-weight the swap's new colour word by this factor
TUNING = "tuning"  # a variant's key: the per-image fit's TuningConfig fields (with tune_steps; its defaults else)

#: edit settings compared (``crossattn.edit_image`` keywords); ``default``: what a user gets
VARIANTS: dict[str, dict] = {
    "default": {},
    "object-blend": {"recolour": False},  # the default for a colour edit before recolour became it (2026-12-08)
    "before": {"direct_inversion": False},  # the edit before issue 41: the source row alone pinned
    "direct": {"direct_inversion": True},  # Direct Inversion: the targets get the source's correction
    "direct-self": {"direct_inversion": True, "self_steps": 0.6},  # and the source's self-attention longer
    "direct-noblend": {"direct_inversion": True, "blend": False},
    "object": {"object_blend": True},  # the blend over the object's own pixels, the source alone pinned
    "direct-object": {"direct_inversion": True, "object_blend": True},
    "direct-object-shared0.5": {"direct_inversion": True, "object_blend": True, "shared_steps": 0.5},
    "direct-object-shared0.6": {"direct_inversion": True, "object_blend": True, "shared_steps": 0.6},
    "direct-object-self1": {"direct_inversion": True, "object_blend": True, "self_steps": 1.0},
    # Plug-and-Play (Tumanyan et al., CVPR 2023): the source's decoder ResBlock outputs for the first τ_f of the
    # steps (PnP's 0.8), its self-attention maps (queries and keys) for τ_A (PnP's 0.5); blocks: decoder up-blocks
    "pnp": {"feature_steps": 0.8, "self_steps": 0.5},
    "pnp-features": {"feature_steps": 0.8},
    "pnp-2blocks": {"feature_steps": 0.8, "self_steps": 0.5, "feature_blocks": 2},
    "pnp-3blocks": {"feature_steps": 0.8, "self_steps": 0.5, "feature_blocks": 3},
    "pnp-all": {"feature_steps": 1.0, "self_steps": 1.0, "feature_blocks": 2},
    "pnp-2blocks-f0.4": {"feature_steps": 0.4, "self_steps": 0.5, "feature_blocks": 2},
    # an edit started from a partial inversion (SDEdit, Meng et al., ICLR 2022): the target follows the source's
    # latents (the image's inversion path while pinned) for the first shared_steps, then samples from there
    "shared0.3": {"shared_steps": 0.3},  # the given-image default before 2026-12-07's lever run (now 0.4)
    "shared0.5": {"shared_steps": 0.5},
    "shared0.5-pinned0.5": {"shared_steps": 0.5, "pinned_steps": 0.5},  # the shared steps all on the path
    "shared0.6-pinned0.6": {"shared_steps": 0.6, "pinned_steps": 0.6},
    "pinned1": {"pinned_steps": 1.0},  # the source row on the path throughout (the object blend's kept pixels)
    # P2P's re-weighting (Hertz et al., ICLR 2023): the target's attention to its new colour word × the factor
    "colour2": {COLOUR_WEIGHT: 2.0},
    "colour3": {COLOUR_WEIGHT: 3.0},
    # combinations of the best of the above
    "shared0.4": {"shared_steps": 0.4},
    "shared0.7-pinned0.7": {"shared_steps": 0.7, "pinned_steps": 0.7},
    "shared0.4-pnp2-f0.4": {"shared_steps": 0.4, "feature_steps": 0.4, "feature_blocks": 2, "self_steps": 0.5},
    "shared0.4-features0.4": {"shared_steps": 0.4, "feature_steps": 0.4},  # one block, the self maps as default
    "shared0.5-pnp2-f0.7": {"shared_steps": 0.5, "feature_steps": 0.7, "feature_blocks": 2, "self_steps": 0.7},
    "shared0.6-pinned0.6-colour2": {"shared_steps": 0.6, "pinned_steps": 0.6, COLOUR_WEIGHT: 2.0},
    # negative-prompt inversion's edit (Miyake et al., 2023): the targets guided against the source caption
    "source-negative": {"source_negative": True},
    "source-negative-shared0.5": {"source_negative": True, "shared_steps": 0.5},
    # recolouring (editing/recolour.py): the given object's fill swapped for the colour of a reference row's drawing,
    # over the object's shading, so the outline and shading stay the drawing's (rows measured before 2026-12-08 ran
    # the least-squares projection of each step it replaced)
    "recolour": {"recolour": True},
    "recolour-shared0.2": {"recolour": True, "shared_steps": 0.2},
    "recolour-shared0": {"recolour": True, "shared_steps": 0.0},
    # per-image tuning (UniTune, Valevski et al., 2022; Imagic, Kawar et al., CVPR 2023): a rank-4 LoRA on the
    # U-Net's attention fitted on the drawing with its caption (lr 1e-3, 4 draws a step), then inverted and edited
    "tune30": {"tune_steps": 30},
    "tune80": {"tune_steps": 80},
}
