"""The training loop's output side: checkpoints, sample grids and the final folder.

Kept apart from the step (:mod:`crossattn.training.train`) so the loop reads as a loop. :class:`TrainerOutputs`
is mixed into the trainer and reads its ``accelerator``, ``run_dir``, ``config``, ``state``, ``ema``
and ``params``; a trainer for another objective (the mini-CLIP, :mod:`crossattn.training.clip_training`)
overrides :meth:`TrainerOutputs.sample` and :meth:`TrainerOutputs.write_final` only.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..config import TrainingConfig
from ..files import atomic_dir, atomic_write, atomic_write_json
from ..models.tokenizer import copy_bpe_files
from .checkpoint_state import load_state, save_state

SAMPLE_SEEDS = (0, 1, 2, 3)
SAMPLE_SCALE = 4  # nearest-neighbour upscale of 32×32 samples so a grid is readable


class TrainerOutputs:
    """Checkpoints (accelerate models/optimizer + :mod:`crossattn.training.checkpoint_state`), samples, ``final/``."""

    @contextlib.contextmanager
    def ema_weights(self):
        """The EMA weights in the models while inside, the trained ones after (also on exceptions)."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            yield
        finally:
            self.ema.restore(self.params)

    def pipeline(self):
        """A ``CrossAttnPipeline`` around the (unwrapped) models being trained."""
        from ..models.pipeline import CrossAttnPipeline

        pipe = CrossAttnPipeline(
            unet=self.accelerator.unwrap_model(self.unet_prepared),
            text_encoder=self.accelerator.unwrap_model(self.text_prepared),
            tokenizer=self.tokenizer,
            scheduler=self.sample_scheduler,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @contextlib.contextmanager
    def evaluating(self):
        """Main process only: the EMA weights in eval mode, no gradients; train mode again after."""
        with self.ema_weights(), torch.no_grad():
            for m in self.trained:
                m.eval()
            try:
                yield
            finally:
                for m in self.trained:
                    m.train()

    def sample(self) -> None:
        """A grid (rows: prompts, columns: seeds) with the EMA weights, on the main process."""
        cfg, acc = self.config, self.accelerator
        if acc.is_main_process:
            prompts, seeds = list(cfg.sample_prompts), list(SAMPLE_SEEDS)
            stem = self.run_dir.samples / f"step-{self.state.step:06d}"
            stem.parent.mkdir(parents=True, exist_ok=True)
            pipe = self.pipeline()
            with self.evaluating():
                write_sample_grid(pipe, cfg, stem.with_suffix(".png"))
                meta = {"step": self.state.step, "rows": prompts, "columns_seeds": seeds, "ema": self.ema is not None}
                atomic_write_json(stem.with_suffix(".json"), meta)
                for writer in self.writers:
                    writer(pipe, prompts, seeds, stem)
                if cfg.data == "shapes":  # where the model means to draw, per position word
                    from .probes import position_probe

                    probe = position_probe(pipe, self.noise_scheduler)
                    self.run_dir.append_log({"step": self.state.step, "position_probe": probe})
        acc.wait_for_everyone()

    def save_checkpoint(self) -> Path:
        """``save_state`` + the loop's own state into a hidden temp folder, then renamed into place
        (atomic on one filesystem)."""
        acc, run, step = self.accelerator, self.run_dir, self.state.step
        tmp = run.temp_checkpoint(step)
        if acc.is_main_process:
            run.remove_stale_temps()
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        if acc.is_main_process:
            save_state(tmp, self.state, self.lr_scheduler, self.ema)
        acc.wait_for_everyone()
        if acc.is_main_process:
            run.publish_checkpoint(step, self.config.keep_checkpoints)
        acc.wait_for_everyone()
        return run.checkpoint(step)

    def load_checkpoint(self, folder: Path) -> None:
        """Refuse pickled custom state, then load accelerate's part (weights-only) and the loop's own."""
        from .checkpoint_state import check_loadable

        check_loadable(folder)
        self.accelerator.load_state(str(folder))
        load_state(folder, self.state, self.lr_scheduler, self.ema, self.accelerator.device)

    def write_due_snapshots(self) -> float:
        """Write ``RUN/snapshots/minute-MMM`` (the EMA weights, as ``final``) for every mark of
        ``snapshot_minutes`` the training clock has passed and no snapshot exists for; returns the
        seconds this took (the loop keeps them off the clock)."""
        import time

        cfg, acc, run = self.config, self.accelerator, self.run_dir
        tick = time.perf_counter()
        due = [m for m in cfg.snapshot_minutes if self.state.seconds >= m * 60]
        due = [m for m in due if not run.snapshot(m).exists()]
        if not self.agreed(bool(due)):
            return 0.0
        if acc.is_main_process:
            for minute in due:
                with self.ema_weights(), atomic_dir(run.snapshot(minute)) as tmp:
                    self.write_final(tmp)
                run.append_log({"step": self.state.step, "snapshot": minute, "seconds": self.state.seconds})
        acc.wait_for_everyone()
        return time.perf_counter() - tick

    def agreed(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (so all processes take the same branch)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return flag
        return bool(acc.reduce(torch.tensor(float(flag), device=acc.device), reduction="sum").item() > 0)

    def save_final(self) -> Path | None:
        """``RUN/final`` from the EMA weights, written atomically on the main process."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return None
        with self.ema_weights(), atomic_dir(self.run_dir.final) as tmp:
            self.write_final(tmp)
        return self.run_dir.final

    def write_final(self, folder: Path) -> None:
        """The pipeline folder (safetensors, fp16 when asked), or what ``export`` writes (a LoRA adapter);
        either way with the training vocabulary (``vocabulary.json``) so unknown prompt words get a warning."""
        from ..models.vocabulary import write_training_vocabulary
        from .train_setup import merge_token_rows

        pipe = self.pipeline()
        write_training_vocabulary(folder, self.dataset, self.config.init_from)
        if self.export is not None:
            self.export(pipe, folder)
            return
        if self.config.save_fp16 or self.config.trainable_token_ids:
            pipe = copy_pipeline(pipe)
            merge_token_rows(pipe.text_encoder)  # a stock CLIPTextModel folder, the trained rows written in
            if self.config.save_fp16:
                pipe = pipe.to(torch.float16)
        from ..models.loading import quiet_loading

        with quiet_loading():  # no "Writing model shards" bar between the loop's own lines
            pipe.save_pretrained(folder, safe_serialization=True)
        self.model_config.save(folder / "crossattn_config.json")
        self.config.save(folder / "training_config.json")
        copy_bpe_files(self.config.init_from, folder / "tokenizer")


def image_grid(images: list, rows: int, cols: int, scale: int = 1):
    """Paste equal-size PIL images row by row into one image, upscaled ``scale``× (nearest)."""
    from PIL import Image

    w, h = images[0].size
    grid = Image.new("RGB", (cols * w * scale, rows * h * scale), "white")
    for i, image in enumerate(images):
        tile = image.resize((w * scale, h * scale), Image.NEAREST)
        grid.paste(tile, ((i % cols) * w * scale, (i // cols) * h * scale))
    return grid


def write_sample_grid(pipe, config: TrainingConfig, path: Path) -> None:
    """The sample grid (rows: ``config.sample_prompts``, columns: :data:`SAMPLE_SEEDS`) as a PNG, atomically,
    drawn with ``config.sample_settings`` (a scheduler named there replaces ``pipe``'s; relation guidance only
    where the pipeline takes it: a diffusers pipeline's grid is drawn without)."""
    from ..models.loading import takes_argument
    from ..models.model import set_scheduler

    prompts, seeds = list(config.sample_prompts), list(SAMPLE_SEEDS)
    settings = config.sample_settings
    if settings.scheduler is not None:
        set_scheduler(pipe, settings.scheduler)
    kwargs = settings.pipeline_kwargs()
    if not takes_argument(pipe, "relation_guidance"):
        kwargs.pop("relation_guidance")
    images = pipe(
        prompts,
        **kwargs,
        num_images_per_prompt=len(seeds),
        generator=[torch.Generator().manual_seed(s) for _ in prompts for s in seeds],
    ).images
    grid = image_grid(images, len(prompts), len(seeds), SAMPLE_SCALE)
    atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))


def copy_pipeline(pipe):
    """A deep copy of a pipeline (so casting it leaves the training models alone)."""
    import copy

    return copy.deepcopy(pipe)
