"""One accelerate training loop, for training from scratch and for fine-tuning a pipeline folder.

Per optimizer step (``grad_accum`` micro-batches, Ho et al. 2020 with the v-target of Salimans &
Ho 2022):

```
x0 (B, 3, H, W), ids (B, T) ── caption dropout: ids → "" with prob p (an unconditional model for CFG)
t ~ U{0..999}, ε ~ N(0, I)  ── x_t = DDPM.add_noise(x0, ε, t), target v = DDPM.get_velocity(x0, ε, t)
text = CLIPTextModel(ids)   ── (B, T, D); trained jointly or frozen
loss = mean‖UNet(x_t, t, text) − v‖² (optionally min-SNR weighted)  → AdamW, clip, cosine LR, EMA
```

The EMA weights are what samples and the final pipeline folder use. Checkpoints hold models and
optimizer (accelerate's ``save_state``) and the LR schedule, EMA and data position
(:mod:`crossattn.training.checkpoint_state`, no pickle); the output side lives in
:mod:`crossattn.training.train_outputs`. Every random draw of a step is a
function of (seed, rank, position) (see :mod:`crossattn.training.batching`), so a resumed run continues
exactly as an uninterrupted one. Launch with ``torchrun --nproc_per_node N -m crossattn train`` for
several CPU processes (gloo), or ``accelerate launch`` on GPUs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, TrainingConfig
from ..files import atomic_write_json
from .batching import CaptionCollate, ShardedBatchSampler, step_generator
from .losses import diffusion_loss
from .runs import RunDir
from .train_outputs import TrainerOutputs, write_sample_grid
from .train_setup import initial_pipeline, make_accelerator, train_token_rows
from .validation import Validation

#: ``writer(pipe, prompts, seeds, stem)`` writes extra files for one sample round (e.g. attention
#: overlays) beside ``stem.png``; it runs with the EMA weights loaded.
SampleWriter = Callable[[Any, list[str], list[int], Path], None]

#: ``customize(pipe)`` runs on the starting pipeline before the optimizer is built: fine-tuning
#: injects LoRA adapters or freezes parts here. Only parameters left with ``requires_grad`` train.
Customize = Callable[[Any], None]
#: ``export(pipe, folder)`` writes ``RUN/final`` from the pipeline holding the EMA weights, instead of
#: the whole pipeline folder (LoRA fine-tuning writes only its adapter).
Export = Callable[[Any, Path], None]

__all__ = ["train", "Trainer", "TrainState", "TrainResult", "write_sample_grid"]


@dataclass
class TrainState:
    """The loop's position: optimizer steps done, micro-batches this process consumed, and seconds on
    the training clock (every session of the run; snapshot writing excluded)."""

    step: int = 0
    batches: int = 0
    seconds: float = 0.0

    def state_dict(self) -> dict[str, float]:
        return {"step": self.step, "batches": self.batches, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.step, self.batches = int(state["step"]), int(state["batches"])
        self.seconds = float(state.get("seconds", 0.0))  # checkpoints before the clock was kept: 0


@dataclass
class TrainResult:
    final: Path | None
    step: int
    losses: list[float] = field(default_factory=list)  # one per optimizer step of this session


def train(
    model_config: ModelConfig,
    config: TrainingConfig,
    dataset,
    out: str | Path,
    resume: str | None = None,
    overwrite: bool = False,
    sample_writers: Sequence[SampleWriter] = (),
    on_step_end: Callable[[TrainState], None] | None = None,
    progress: bool = True,
    customize: Customize | None = None,
    export: Export | None = None,
    trainer_cls: type[Trainer] | None = None,
    validation: Validation | None = None,
    report_to: str | None = None,
) -> TrainResult:
    """Train and write the run folder (see :mod:`crossattn.training.runs`); returns where ``final`` went.

    ``dataset`` is a ``Dataset`` of ``{"pixel_values": (3, H, W) in [-1, 1], "text": str}`` items, or
    a function ``n -> Dataset`` given the number of items the whole run consumes (procedural data).
    ``on_step_end(state)`` is called after every optimizer step (progress probes, tests).
    With ``config.init_from`` the models come from that pipeline folder and ``model_config`` is only
    recorded; ``customize`` (see :data:`Customize`) adapts them before training. ``trainer_cls``
    swaps the objective (:class:`crossattn.training.clip_training.ClipTrainer` trains the mini-CLIP).
    ``validation`` draws word maps beside the base model's on its own schedule
    (:mod:`crossattn.training.validation`). ``report_to``: accelerate's tracker, ``"tensorboard"`` or ``"none"``
    (None: TensorBoard when it is installed).
    """
    cls = trainer_cls or Trainer
    trainer = cls(model_config, config, RunDir(Path(out)), sample_writers, customize, export, report_to)
    trainer.validation = validation
    trainer.setup(dataset, resume, overwrite)
    try:
        return trainer.run(on_step_end, progress)
    finally:
        trainer.accelerator.end_training()


class Trainer(TrainerOutputs):
    """The loop's state and its steps; :func:`train` is the way in."""

    validation: Validation | None = None  # validation maps (fine-tuning), set by train()

    def __init__(
        self,
        model_config: ModelConfig,
        config: TrainingConfig,
        run: RunDir,
        writers=(),
        customize=None,
        export=None,
        report_to: str | None = None,
    ):
        self.model_config, self.config, self.run_dir, self.writers = model_config, config, run, list(writers)
        self.customize, self.export = customize, export
        self.accelerator = make_accelerator(config, run, report_to)
        self.state = TrainState()

    # ------------------------------------------------------------------ setup

    def setup(self, dataset, resume: str | None, overwrite: bool) -> None:
        acc, cfg = self.accelerator, self.config
        checkpoint = self.check_run_folder(resume, overwrite)
        self.build_models()
        self.build_optimization()
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        if acc.is_main_process:
            self.run_dir.root.mkdir(parents=True, exist_ok=True)
            self.run_dir.remove_stale_temps()
            self.run_dir.truncate_log(self.state.step)
            atomic_write_json(self.run_dir.config, self.describe())
        acc.wait_for_everyone()
        self.loader = self.build_loader(dataset)
        if acc.log_with:
            acc.init_trackers("tensorboard", config={k: str(v) for k, v in cfg.to_dict().items()})
        if self.validation is not None:
            self.validate(start=True)

    def check_run_folder(self, resume: str | None, overwrite: bool) -> Path | None:
        """Refuse to clobber a run; clear it on ``overwrite``; find the checkpoint to resume."""
        run, acc = self.run_dir, self.accelerator
        if resume is not None:
            return run.resolve_resume(resume)
        run.check_new(overwrite)
        acc.wait_for_everyone()  # every process checked before the main one clears
        if overwrite and acc.is_main_process:
            run.clear()
        acc.wait_for_everyone()
        return None

    def build_models(self) -> None:
        cfg, acc = self.config, self.accelerator
        pipe = initial_pipeline(self.model_config, cfg)
        self.tokenizer, self.sample_scheduler = pipe.tokenizer, pipe.scheduler
        self.max_length = min(self.tokenizer.model_max_length, pipe.text_encoder.config.max_position_embeddings)
        from ..models.model import make_scheduler

        # Training noise: DDPM forward process on the model's own schedule (v-target from it too).
        self.noise_scheduler = make_scheduler("ddpm", dict(pipe.scheduler.config))
        unet, text_encoder = pipe.unet.train(), pipe.text_encoder
        text_encoder.train(cfg.train_text_encoder).requires_grad_(cfg.train_text_encoder)
        if self.customize is not None:
            with torch.random.fork_rng():  # adapters draw their init from the global RNG: seed it, then restore
                torch.manual_seed(cfg.seed)
                self.customize(pipe)
        self.token_rows = train_token_rows(text_encoder, cfg.trainable_token_ids) if cfg.trainable_token_ids else None
        self.unet, self.text_encoder = unet, text_encoder.to(acc.device)
        text_trains = cfg.train_text_encoder or bool(cfg.trainable_token_ids)
        self.trained = [unet, text_encoder] if text_trains else [unet]
        empty = self.tokenizer("", padding="max_length", max_length=self.max_length).input_ids
        self.empty_ids = torch.tensor(empty, device=acc.device)[None]  # (1, T)

    def build_optimization(self) -> None:
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        cfg, acc = self.config, self.accelerator
        params = [p for m in self.trained for p in m.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every parameter is frozen")
        optimizer = torch.optim.AdamW(
            self.param_groups(params), betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay
        )
        # Stepped by hand once per optimizer step (not prepared: accelerate would step it per process).
        self.lr_scheduler = get_scheduler(
            cfg.lr_schedule, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps
        )
        prepared = acc.prepare(*self.trained, optimizer)
        self.trained_prepared, self.optimizer = list(prepared[:-1]), prepared[-1]
        self.bind_prepared(self.trained_prepared)
        self.params = params
        self.ema = EMAModel(params, decay=cfg.ema_decay, foreach=True) if cfg.ema_decay > 0 else None

    def bind_prepared(self, prepared: list) -> None:
        """Name the models accelerate wrapped (``prepared`` follows ``self.trained``)."""
        self.unet_prepared = prepared[0]
        self.text_prepared = prepared[1] if len(prepared) > 1 else self.text_encoder

    def embedding_table(self) -> torch.nn.Parameter:
        """The token embedding rows ``embedding_lr`` applies to: the new words' rows when only they
        train, else the whole table."""
        if self.token_rows is not None:
            return self.token_rows
        return self.text_encoder.get_input_embeddings().weight

    def param_groups(self, params: list) -> list[dict]:
        """One AdamW group at ``learning_rate``, or two when ``embedding_lr`` sets the token embeddings apart
        (the LR schedule scales every group alike)."""
        cfg = self.config
        table = self.embedding_table()
        if cfg.embedding_lr is None or not any(p is table for p in params):
            return [{"params": params, "lr": cfg.learning_rate}]
        rest = [p for p in params if p is not table]
        # Only some rows train (new words): no weight decay, which would move every row.
        table_group = {"params": [table], "lr": cfg.embedding_lr}
        if cfg.trainable_token_ids:
            table_group["weight_decay"] = 0.0
        return [{"params": rest, "lr": cfg.learning_rate}, table_group]

    def build_loader(self, dataset):
        cfg, acc = self.config, self.accelerator
        if not isinstance(dataset, torch.utils.data.Dataset) and callable(dataset):
            dataset = dataset(cfg.steps * cfg.grad_accum * cfg.batch_size * acc.num_processes)
        self.dataset = dataset
        self.check_item(dataset[0])
        sampler = ShardedBatchSampler(
            len(dataset), cfg.batch_size, cfg.data_seed, acc.process_index, acc.num_processes, self.state.batches
        )
        self.batches_per_epoch = sampler.batches_per_epoch
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.collate(),
            num_workers=cfg.num_workers,
        )
        return iter(loader)

    def check_item(self, item: dict) -> None:
        """The data must match the model: ``(C, H, W)`` with the U-Net's channels and sample size."""
        shape = tuple(torch.as_tensor(item["pixel_values"]).shape)
        size, channels = self.unet.config.sample_size, self.unet.config.in_channels
        if shape != (channels, size, size):
            raise ValueError(f"dataset images have shape {shape}; this model trains on {(channels, size, size)}")
        if self.config.grounding_weight > 0 and "word_masks" not in item:
            raise ValueError("the grounding loss needs word masks (procedural scenes); this dataset has none")

    def collate(self):
        """Batches for this objective: images stacked, captions tokenized (and word masks made token masks)."""
        return CaptionCollate(self.tokenizer, self.max_length)

    def compute_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """The diffusion objective (:func:`crossattn.training.losses.diffusion_loss`) for one micro-batch."""
        return diffusion_loss(
            self.unet_prepared, self.text_prepared, self.noise_scheduler, batch, generator, self.config, self.empty_ids
        )

    def describe(self) -> dict:
        acc = self.accelerator
        launch = {
            "world_size": acc.num_processes,
            "device": str(acc.device),
            "mixed_precision": acc.mixed_precision,
            "threads": torch.get_num_threads(),
        }
        return {"model": self.model_config.to_dict(), "training": self.config.to_dict(), "launch": launch}

    # ------------------------------------------------------------------ loop

    def run(self, on_step_end=None, progress: bool = True) -> TrainResult:
        cfg, acc = self.config, self.accelerator
        bar = self.progress_bar(progress)
        losses: list[float] = []
        window: list[float] = []
        tick = time.perf_counter()
        out_of_time = self.past()  # resumed after the limit was reached: no step more
        while self.state.step < cfg.steps and not out_of_time:
            loss = self.optimizer_step()
            losses.append(loss)
            window.append(loss)
            now = time.perf_counter()
            seconds, tick = now - tick, now
            rate = cfg.batch_size * cfg.grad_accum * acc.num_processes / max(seconds, 1e-9)
            self.state.seconds += seconds
            bar.update(min(seconds, bar.total - bar.n) if cfg.time_limit else 1)
            bar.set_postfix(step=self.state.step, loss=f"{loss:.4f}", samples_s=f"{rate:.1f}")
            out_of_time = self.past()
            self.after_step(window, rate, last=out_of_time or self.state.step == cfg.steps)
            if on_step_end is not None:
                on_step_end(self.state)
            tick += self.write_due_snapshots()  # off the clock: the seconds it took are not counted
        bar.close()
        return TrainResult(self.save_final(), self.state.step, losses)

    def progress_bar(self, progress: bool):
        """Steps out of ``steps``; with a time limit, the run's training clock out of the limit (seconds),
        since such a run stops on the clock: counted in steps, it showed 1,000,000 steps and an ETA of days."""
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        disable = not (progress and acc.is_local_main_process)
        if cfg.time_limit:
            clock = "{desc}{percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of training clock [{elapsed}{postfix}]"
            total = cfg.time_limit * 60
            start = min(self.state.seconds, total)
            return tqdm(total=total, initial=start, disable=disable, unit="s", bar_format=clock)
        return tqdm(total=cfg.steps, initial=self.state.step, disable=disable, unit="step")

    def optimizer_step(self) -> float:
        """``grad_accum`` micro-batches, one AdamW step, the LR schedule and the EMA; returns the mean loss."""
        cfg, acc = self.config, self.accelerator
        total = 0.0
        for _ in range(cfg.grad_accum):
            batch = next(self.loader)
            generator = step_generator(cfg.seed, acc.process_index, self.state.batches)
            self.state.batches += 1
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            with acc.accumulate(*self.trained_prepared):
                loss = self.compute_loss(batch, generator)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total += loss.detach().item()
        self.lr_scheduler.step()
        if self.ema is not None:
            self.ema.step(self.params)
        self.state.step += 1
        return total / cfg.grad_accum

    def past(self) -> bool:
        """Whether the run's training clock reached ``time_limit`` on any process (so all processes stop at
        the same step). The clock is kept in checkpoints, so a resumed 60-minute run stops at 60 minutes in
        all (resume with a larger limit to go on); snapshot writing is off the clock."""
        limit = self.config.time_limit * 60
        return bool(limit) and self.agreed(self.state.seconds >= limit)

    def after_step(self, window: list[float], rate: float, last: bool) -> None:
        """Log, sample and checkpoint on their schedules, and always at the ``last`` step of this session."""
        cfg, step = self.config, self.state.step
        if step % cfg.log_every == 0 or last:
            self.log(window, rate)
            window.clear()
        if cfg.sample_every and (step % cfg.sample_every == 0 or last):
            self.sample()
        if self.validation is not None and self.validation.due(step, last):
            self.validate()
        if step % cfg.checkpoint_every == 0 or last:
            self.save_checkpoint()

    def validate(self, start: bool = False) -> None:
        """Validation maps on the main process with the EMA weights: the base model's at ``start`` (drawn at
        step 0, read back when resumed), else the current weights' beside them; their numbers to the tracker."""
        acc, step = self.accelerator, self.state.step
        if acc.is_main_process:
            with self.evaluating():
                rows = (self.validation.start if start else self.validation.run)(self.pipeline(), step)
            self.validation.log(acc, rows, step)
        acc.wait_for_everyone()

    def log(self, window: list[float], rate: float) -> None:
        acc = self.accelerator
        mean = torch.tensor(sum(window) / max(len(window), 1), device=acc.device)
        mean = acc.reduce(mean, reduction="mean").item()  # over processes
        record = {
            "step": self.state.step,
            "loss": mean,
            "lr": self.lr_scheduler.get_last_lr()[0],
            "samples_per_s": rate,
            "epoch": self.state.batches // self.batches_per_epoch,
            "time": time.time(),
        }
        if not math.isfinite(mean):
            raise FloatingPointError(f"loss became {mean} at step {self.state.step}; lower the learning rate")
        if acc.is_main_process:
            self.run_dir.append_log(record)
        acc.log({"loss": mean, "lr": record["lr"]}, step=self.state.step)
