"""``crossattn finetune``'s prior preservation flags: how many images the base model draws, of what, and their weight.

One prior, two sources of captions (:mod:`crossattn.training.prior`): a crossattn model draws captions of the scenes
grammar it was trained on; a Stable Diffusion / SDXL folder draws ``--class-prompt`` (the class words, as
diffusers' ``train_dreambooth_lora(_sdxl).py`` take ``--class_prompt``), which a crossattn model may be given too.
Either way the images go to ``OUT/prior``, are reused on ``--resume``, and train beside DATA with
``--prior-loss-weight`` (diffusers' ``--prior_loss_weight``) on their loss.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

from ..config import SamplingConfig
from ..errors import BadArgument


def add_prior_flags(p) -> None:
    """``--prior N``, ``--class-prompt P``, ``--prior-loss-weight F``."""
    p.add_argument(
        "--prior",
        type=int,
        metavar="N",
        help="images the base model draws of what it knows (DreamBooth prior preservation), trained on beside "
        "DATA so it is not forgotten; 0 = off (default: as many as DATA's images, at most 200, for LoRA on a "
        "crossattn model or with --class-prompt; else 0)",
    )
    p.add_argument(
        "--class-prompt",
        metavar="P",
        help="the class words the prior images are drawn of, e.g. 'a photo of a dog' (diffusers' --class_prompt); "
        "needed for prior images on an SD-1.5 / SDXL folder (default on a crossattn model: captions of the "
        "scenes grammar it was trained on)",
    )
    p.add_argument(
        "--prior-loss-weight",
        type=float,
        default=1.0,
        metavar="F",
        help="weight of the prior images' loss beside DATA's (diffusers' --prior_loss_weight; default: %(default)s)",
    )


def prior_count(args: argparse.Namespace, images: int, family: str | None = None) -> int:
    """``--prior``, else as many as the user's images (at most ``MAX_PRIOR``) in LoRA mode on a crossattn model
    or wherever ``--class-prompt`` is given; 0 otherwise (``--full``; a family folder without a class prompt)."""
    from ..training.prior import MAX_PRIOR

    if args.prior is not None and not 0 <= args.prior <= MAX_PRIOR:
        raise BadArgument(f"--prior must be 0–{MAX_PRIOR} (images the base model draws), got {args.prior}")
    if not 0 <= args.prior_loss_weight < math.inf:  # before anything is drawn (NaN fails too)
        raise BadArgument(f"--prior-loss-weight must be a finite number >= 0, got {args.prior_loss_weight}")
    if args.class_prompt is not None and args.prior == 0:
        raise BadArgument(f"--class-prompt {args.class_prompt!r} with --prior 0 draws nothing; leave one out")
    if family is not None and args.prior and args.class_prompt is None:
        raise BadArgument(
            f"--prior {args.prior} on a {family} folder needs --class-prompt P: the class words its prior images "
            "are drawn of (e.g. 'a photo of a dog'); it has no scenes grammar to caption them"
        )
    if args.prior is not None:
        count = args.prior
    elif args.class_prompt is not None:
        count = min(images, MAX_PRIOR)
    else:
        count = 0 if args.full or family is not None else min(images, MAX_PRIOR)
    if count == 0 and args.prior_loss_weight != 1.0:
        raise BadArgument(f"--prior-loss-weight {args.prior_loss_weight} weighs prior images, and this run has none")
    return count


def prior_data(args: argparse.Namespace, model: str | None, data, out: Path, resolution: int, family: str | None):
    """The prior images (``OUT/prior``, drawn now or reused) as training items weighted by ``--prior-loss-weight``,
    or None: ``--prior 0``, no base model, or a crossattn base model without a class prompt that was not trained
    on the scenes grammar (with a warning). A family folder's images are drawn at the training ``resolution``."""
    from ..data.folder import ImageFolderDataset
    from ..models.vocabulary import load_vocabulary
    from ..training.prior import PriorImages, PriorSettings, prior_folder
    from ..training.runs import RunDir

    count = prior_count(args, len(data), family)
    vocabulary = load_vocabulary(model)
    if count == 0 or model is None or not (vocabulary or args.class_prompt):
        return None
    if args.resume is None:
        RunDir(out).check_new(args.overwrite)  # before drawing anything into OUT
    settings = PriorSettings(
        count=count,
        base_model=model,
        sampling=SamplingConfig(seed=args.seed),
        class_prompt=args.class_prompt,
        size=resolution if family is not None else None,
    )
    folder = prior_folder(out, settings, vocabulary, replace=args.overwrite, progress=not args.no_progress)
    if folder is None:
        warnings.warn(
            f"no prior images: {model} was not trained on the scenes grammar, so the base model's own captions "
            "are unknown; fine-tuning on DATA alone (its other abilities may drift; --class-prompt P names them)",
            stacklevel=2,
        )
        return None
    return PriorImages(ImageFolderDataset(folder, resolution), args.prior_loss_weight)
