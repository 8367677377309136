"""Named training recipes: a model shape and training settings that go together.

``crossattn train --recipe speedrun`` (and ``train-clip --recipe speedrun``) starts from a recipe
instead of the defaults; flags given on the command line still win. The run's ``config.json``
records the recipe's name and every value it set, so a run folder says how it was made.

The speedrun (issue 26) trains a U-Net from random weights, reading the shipped mini-CLIP's text
tower frozen (as Stable Diffusion reads CLIP), on an hour of a 2-core CPU. Measured there: with each of
two seeds on one core, every evaluation bar met at minute 60 but relation with guidance (0.917 and 0.925,
bar 0.95); as one run with both cores (two threads, 8,546 and 9,057 steps, issue 40), every bar, relation
with guidance 1.000 (seeds 0 and 1, ``eval --n 300``).
The mini-CLIP's speedrun (20 minutes) brings every probe to its bar as one run on both cores
(held-out relation 0.983 / 0.991 on two seeds, bar 0.98); with one core per seed, colour and shape only.
What each value is for, and what was measured, is in ``docs/benchmarks.md`` (speedrun).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: Minutes of the training clock at which the speedrun writes its EMA weights as a pipeline folder
#: (``RUN/snapshots/minute-010``), evaluated afterwards off the clock (``benchmarks/speedrun.py``).
SPEEDRUN_MINUTES = (10.0, 20.0, 30.0, 45.0, 60.0)


@dataclass(frozen=True)
class Recipe:
    """``model`` sets fields of the model config (``ModelConfig`` / ``ClipConfig``), ``training`` of
    ``TrainingConfig``; ``text_encoder`` names a shipped CLIP folder to read (relative to the package)."""

    name: str
    summary: str
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def apply(self, model_config, training_config):
        """``(model, training)`` with this recipe's values put in; the training config records the name."""
        model = dataclasses.replace(model_config, **self.model)
        training = dataclasses.replace(training_config, **self.training, recipe=self.name)
        return model, training


def shipped_clip_folder() -> str:
    """The mini-CLIP folder shipped with the package (its text tower is what the speedrun reads)."""
    from ..models import PRETRAINED_DIR

    return str(PRETRAINED_DIR / "clip")


UNET_RECIPES: dict[str, Recipe] = {
    "speedrun": Recipe(
        name="speedrun",
        summary="a U-Net from random weights on the frozen mini-CLIP, a 60-minute clock; measured as one run on 2 CPU "
        "cores (--threads 2): every eval bar met by minute 20-30, relation with guidance 1.00 at minute 60 (seeds 0 and 1)",
        # four levels down to 4×4: where things go is cheap to tell apart there (trial t3: position probe
        # 5/5 at step 800; three levels, 1,200). Cross-attention at 16×16 and 8×8 only: 4×4 word maps,
        # upsampled, are blobs that pull the averaged maps off the objects (t3's 4×4 layers: IoU 0.38 of
        # 0.67; t4 without them: IoU 0.72 at step 881 against t3's 0.65 at 862, the rest on par)
        model=dict(
            block_out_channels=(32, 64, 64, 64),
            cross_attention_levels=(False, True, True, False),
            mid_block_cross_attention=False,
        ),
        training=dict(
            steps=1_000_000,  # the clock ends the run, not the step count
            time_limit=60.0,
            batch_size=32,
            learning_rate=1e-3,
            lr_schedule="constant_with_warmup",
            warmup_steps=100,
            ema_decay=0.998,
            grounding_weight=0.1,
            ground_positions=True,  # position words attend to their object: position learnt in ~1,200 steps
            timestep_bias=0.5,
            scene_mix=(0.1, 0.3, 0.5, 0.1),
            text_encoder_from=shipped_clip_folder(),
            train_text_encoder=False,
            sample_every=0,  # sample grids cost clock time; the snapshots are evaluated off the clock
            checkpoint_every=500,
            snapshot_minutes=SPEEDRUN_MINUTES,
        ),
    ),
}

#: Share of counting scenes ("two red circles [and a blue square]", issue 40) in ``speedrun-counting``.
COUNTING_SHARE = 0.25


def with_training(recipe: Recipe, name: str, summary: str, **training: Any) -> Recipe:
    """``recipe`` under another ``name`` with some training values changed (the rest shared, not copied)."""
    return dataclasses.replace(recipe, name=name, summary=summary, training={**recipe.training, **training})


# The speedrun on the grammar with counting (issue 40). A recipe of its own, so the speedrun's measured
# tables (and runs resumed from them) keep their data; its frozen text tower is the shipped mini-CLIP,
# which never read a number word (their states are those of untrained token rows).
UNET_RECIPES["speedrun-counting"] = with_training(
    UNET_RECIPES["speedrun"],
    "speedrun-counting",
    f"the speedrun with a {COUNTING_SHARE} share of counting scenes ('two red circles [and a blue square]')",
    counting=COUNTING_SHARE,
)

CLIP_RECIPES: dict[str, Recipe] = {
    "speedrun": Recipe(
        name="speedrun",
        summary="the mini-CLIP on a 20-minute clock; measured as one run on 2 CPU cores (--threads 2), two seeds: "
        "every probe bar met at minute 20 (held-out relation 0.98-0.99, bar 0.98)",
        # train-clip's own defaults (shared/TRIALS.md run B: AdamW 5e-4, cosine over 2,500 steps; the shipped
        # run of them had relation hard negatives at 0.76 by step 1,000 and 0.98 by 1,250), on a 20-minute
        # clock. A constant 1e-3 (trial c1) left relations at chance (0.47) at step 900.
        training=dict(
            time_limit=20.0,
            sample_every=0,
            checkpoint_every=250,
            snapshot_minutes=(5.0, 10.0, 15.0, 20.0),
        ),
    ),
}


def get_recipe(name: str, clip: bool = False) -> Recipe:
    """The named recipe of ``train`` (``clip=False``) or ``train-clip``; an unknown name is a ``ValueError``."""
    recipes = CLIP_RECIPES if clip else UNET_RECIPES
    if name not in recipes:
        command = "train-clip" if clip else "train"
        raise ValueError(f"--recipe {name!r}: {command} knows {', '.join(sorted(recipes))}")
    return recipes[name]
