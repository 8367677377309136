"""Inverting a given image into the noise that draws it again: DDIM inversion and null-text inversion.

    inversion = invert(pipe, image_latents, "a red circle", num_inference_steps=20, null_text_steps=10)
    inversion.latents          # x_T, (1, C, h, w): sampled with DDIM from here the image comes back
    inversion.null_embeddings  # {timestep: (1, T, D)} the source row's unconditional text states

*DDIM inversion* (Song et al., ICLR 2021; Dhariwal & Nichol, 2021) runs the deterministic DDIM update
backwards, from the clean image to noise, with the prompt's conditional prediction
(diffusers' ``DDIMInverseScheduler``). Sampled forward with classifier-free guidance the trajectory
drifts, the more so the larger the guidance. *Null-text inversion* (Mokady et al., "Null-text Inversion
for Editing Real Images using Guided Diffusion Models", CVPR 2023) keeps that trajectory as the target
and, step by step, optimises the unconditional ("null") text states so that the guided DDIM step from
where the reconstruction is lands on it; the edit then samples with those null states
(:class:`NullText`, a U-Net pre-hook that puts each step's states in the unconditional half of every batch). After
DDIM inversion alone the source row's unconditional states are the prompt's own (Miyake et al.,
"Negative-prompt Inversion", 2023): its guided prediction is then the conditional one the path was
inverted with, whatever the guidance, so it draws the image again as closely as the path allows; this
is also where null-text's fit starts.

The model space is the pipeline's: pixels in [-1, 1] for ours, VAE latents for latent pipelines.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from ..attention.install import ProcessorHook
from ..config import SamplingConfig
from .added_conditioning import added_conditioning, null_rows_pooled, sdxl_prompt_states, takes_added_conditioning

#: Adam's learning rate on the null text states, and the early-stop tolerance per step (Mokady et al.:
#: stop when the step's loss is below 1e-5 + i·2e-5, i the step index). 3e-2 for every fit fits all 200
#: benchmark scenes but moves the states further from the prompt's, and the edits took that in: the other
#: object of a two-object Pillow scene kept 0.96 → 0.92 (docs/benchmarks.md); so 3e-2 only for a refit.
NULL_TEXT_LR = 1e-2
NULL_TEXT_TOLERANCE = (1e-5, 2e-5)
#: a fit whose last step still misses the image by more than this many times its tolerance failed, and is
#: fitted again at ``NULL_TEXT_REFIT_LR``, the fit that ends closer kept. Fits that hold stay as they were,
#: and one that fails gets the larger steps it needs: of the benchmark's 200 fits one, a Pillow drawing's,
#: ended at 87 tolerances (20.7 dB; refitted, 1.2 and 41.9 dB), the other 199 within 2.7 (docs/benchmarks.md).
NULL_TEXT_REFIT = 10.0
NULL_TEXT_REFIT_LR = 3e-2
#: re-solves of each DDIM inversion step at the level it reaches (0: plain DDIM inversion), each kept only
#: where it lands closer. With the source row's unconditional states the prompt's own (negative-prompt
#: inversion) the reconstruction samples the conditional prediction the path was inverted with, so a more
#: exact path draws the image more exactly: Pillow drawings the plain path lost (18.6–23.3 dB, pairs 18,
#: 34) came back at 33.6–45.2 with one re-solve; with two, three fell back (18.3–21.3). Null-text inversion
#: fits its guided steps onto the plain path (Mokady et al.): on one re-solve's path three export scenes
#: fell from 44–46 to 38–40 dB, so it keeps 0 (``NULL_TEXT_FIXED_POINT_STEPS``).
FIXED_POINT_STEPS = 1
NULL_TEXT_FIXED_POINT_STEPS = 0


@dataclass
class Inversion:
    """The inverted noise of a given image and what it takes to draw the image again from it."""

    latents: torch.Tensor  # x_T, (1, C, h, w)
    trajectory: list[torch.Tensor]  # x_0 (the image) … x_T, the DDIM inversion's path
    timesteps: list[int]  # the sampling timesteps, high to low
    # timestep → (1, T, D), the source row's unconditional states: the prompt's own after DDIM inversion
    # (negative-prompt inversion), fitted after null-text; empty without guidance
    null_embeddings: dict[int, torch.Tensor] = field(default_factory=dict)
    null_text_losses: list[float] = field(default_factory=list)  # the loss of each step's kept states (null-text only)
    fixed_point_steps: int = FIXED_POINT_STEPS  # re-solves of each step of the path
    null_text_path: list[torch.Tensor] = field(default_factory=list)  # null-text: x after each fitted step, high to low
    null_text_lr: float = 0.0  # Adam's learning rate of the fit kept (NULL_TEXT_REFIT_LR after a refit); 0 after DDIM

    @property
    def sampling_path(self) -> list[torch.Tensor]:
        """Where the source row is after each sampling step, high to low: ``[x_{T-1}, …, x_0]``.

        After null-text inversion, the path its fitted states were fitted along (each step's start, so
        each step's states act where they were fitted); after DDIM inversion, the inversion path."""
        return self.null_text_path or self.trajectory[-2::-1]


def prompt_states(
    pipe, prompt: str, negative_prompt: str | None = None, guided: bool = True, reader: str = "inverting an image"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(cond, uncond)`` text states ``(1, T, D)`` of ``prompt`` and the negative prompt (default ""); with
    ``guided`` False only the prompt's are encoded (``uncond`` None). The one text encoding of a U-Net pass
    outside a pipeline call: ``reader`` names, in the error for a pipeline that needs added conditioning,
    what reads them."""
    from ..errors import BadArgument
    from ..models.pipeline import CrossAttnPipeline

    if isinstance(pipe, CrossAttnPipeline):
        if not guided:
            return pipe.encode_prompt([prompt]), None
        states = pipe.encode_prompt([negative_prompt or "", prompt])  # (2, T, D)
        return states[1:], states[:1]
    if takes_added_conditioning(pipe) and hasattr(pipe, "encode_prompt"):  # SDXL: its two text encoders
        cond, uncond, _ = sdxl_prompt_states(pipe, prompt, negative_prompt, guided)  # added_conditioning.py
        return cond, uncond
    if pipe.unet.config.addition_embed_type is not None or not hasattr(pipe, "encode_prompt"):
        raise BadArgument(
            f"{type(pipe).__name__} needs added conditioning of kind {pipe.unet.config.addition_embed_type!r}; "
            f"{reader} reads CrossAttnPipeline, SD-1.5- and SDXL-shaped pipelines"
        )
    cond, uncond = pipe.encode_prompt(prompt, pipe.device, 1, guided, negative_prompt)
    return cond, uncond


def ddim_scheduler(pipe):
    """A ``DDIMScheduler`` with ``pipe``'s schedule (betas, prediction type, spacing): deterministic (η = 0)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)


@contextlib.contextmanager
def scheduler_swapped(pipe, scheduler):
    """``pipe.scheduler`` is ``scheduler`` inside the block, its own again after (also after an exception)."""
    own = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        yield scheduler
    finally:
        pipe.scheduler = own


def level_alphas(scheduler, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(√ᾱ, √(1 − ᾱ))`` at timestep ``t`` of the DDIM ``scheduler``; below 0, its final ᾱ (the clean end)."""
    alpha_bar = scheduler.alphas_cumprod[t] if t >= 0 else scheduler.final_alpha_cumprod
    return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()


def inverse_step(x, pred, here, there, prediction_type: str) -> torch.Tensor:
    """The ``x_there`` from which a DDIM step with the model output ``pred`` lands on ``x`` (at ``here``).

    The DDIM step is affine in its start given the output (Song et al., 2021, eq. 12, η = 0), so this
    solves it: with ε-prediction ``x_there = (α_t x − (α_t σ_h − α_h σ_t) ε) / α_h``; with v-prediction
    (Salimans & Ho, 2022) ``x_there = (x − (σ_h α_t − α_h σ_t) v) / (α_h α_t + σ_h σ_t)``."""
    (a_h, s_h), (a_t, s_t) = here, there
    if prediction_type == "v_prediction":
        return (x - (s_h * a_t - a_h * s_t) * pred) / (a_h * a_t + s_h * s_t)
    if prediction_type == "epsilon":
        return (a_t * x - (a_t * s_h - a_h * s_t) * pred) / a_h
    raise ValueError(f"cannot invert a model that predicts {prediction_type!r}; it must predict epsilon or v")


@torch.no_grad()
def ddim_invert(pipe, latents, cond, num_inference_steps: int, fixed_point_steps: int = FIXED_POINT_STEPS):
    """The DDIM inversion path ``[x_0 = latents, …, x_T]`` under the prompt's conditional prediction.

    Each step first takes the output at the lower level (the usual approximation, as diffusers'
    ``DDIMInverseScheduler``), then up to ``fixed_point_steps`` times re-solves the step with the output at
    the level it reaches (fixed-point inversion: Pan et al., "Effective Real Image Editing with Accelerated
    Iterative Diffusion Inversion", ICCV 2023), so that sampling back retraces the path. A re-solve is
    kept only where the DDIM step from it lands closer to the step's start: near the clean end the
    iteration can move away (an export scene's reconstruction fell 40.8 → 32.2 dB with every re-solve kept)."""
    scheduler = ddim_scheduler(pipe)
    scheduler.set_timesteps(num_inference_steps, device=latents.device)
    ratio = scheduler.config.num_train_timesteps // num_inference_steps
    up = [int(t) for t in reversed(scheduler.timesteps)]  # low to high
    kind = scheduler.config.prediction_type
    path, pred = [latents], None  # pred: the output at path[-1], when a re-solve already measured it
    for here, there in zip([up[0] - ratio, *up[:-1]], up, strict=True):
        a_here, a_there = level_alphas(scheduler, here), level_alphas(scheduler, there)
        x = path[-1]
        if pred is None:
            pred = pipe.unet(x, max(here, 0), encoder_hidden_states=cond).sample
        x_there, pred = inverse_step(x, pred, a_here, a_there, kind), None
        if fixed_point_steps:
            x_there, pred = re_solved(pipe, scheduler, (x, x_there, there), cond, (a_here, a_there), fixed_point_steps)
        path.append(x_there)
    return path


def re_solved(pipe, scheduler, step, cond, alphas, fixed_point_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_there`` re-solved at most ``fixed_point_steps`` times with the output where it is, each re-solve
    kept only while the DDIM step back from it lands closer to ``x``. ``step``: ``(x, x_there, there)``.
    Returns the kept ``x_there`` and the output there, at ``there``: the next inversion step's own, so
    checking costs one U-Net pass in all (20 steps, one re-solve: 41 passes; 40 unchecked)."""
    x, x_there, there = step
    kind = scheduler.config.prediction_type

    def landing(start):
        pred = pipe.unet(start, there, encoder_hidden_states=cond).sample
        miss = torch.nn.functional.mse_loss(scheduler.step(pred, there, start).prev_sample, x).item()
        return pred, miss

    pred, miss = landing(x_there)
    for _ in range(fixed_point_steps):
        candidate = inverse_step(x, pred, *alphas, kind)
        candidate_pred, candidate_miss = landing(candidate)
        if candidate_miss >= miss:
            break
        x_there, pred, miss = candidate, candidate_pred, candidate_miss
    return x_there, pred


def tolerance(i: int) -> float:
    """Mokady et al.'s early-stop loss of sampling step ``i`` (0 = the noisiest)."""
    return NULL_TEXT_TOLERANCE[0] + i * NULL_TEXT_TOLERANCE[1]


def fit_null_step(pipe, scheduler, step, start, guidance_scale: float, i: int, fit: tuple[int, float]):
    """One sampling step of Mokady et al.'s loop: Adam on a copy of the null states ``(1, T, D)`` so that
    the guided DDIM step from ``x`` at ``t`` lands on ``target``. ``step``: ``(x, t, target)``; ``start``:
    ``(null, pred_cond)``; ``fit``: ``(inner_steps, learning rate)``. Returns the states with the lowest
    loss measured, that loss, and where the step with them lands ``(1, C, h, w)``: each Adam step is
    measured before it is kept, so the loss recorded is that of the states returned, and their step needs
    no second pass."""
    (x, t, target), (null, pred_cond), (inner_steps, lr) = step, start, fit
    null = null.detach().clone().requires_grad_(True)  # a copy: Adam updates it in place
    optimiser = torch.optim.Adam([null], lr=lr * (1.0 - i / 100.0))
    best, best_loss, landed = null.detach().clone(), float("inf"), x
    for k in range(inner_steps + 1):  # inner_steps Adam steps, each measured by the next pass
        pred_uncond = pipe.unet(x, t, encoder_hidden_states=null).sample
        pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
        reached = scheduler.step(pred, t, x).prev_sample  # (1, C, h, w)
        loss = torch.nn.functional.mse_loss(reached, target)
        value = loss.item()
        if value < best_loss:
            best, best_loss, landed = null.detach().clone(), value, reached.detach()
        if k == inner_steps or best_loss < tolerance(i):
            break  # close enough: a step of Adam would only move away
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return best, best_loss, landed


def optimise_null_text(pipe, path, cond, guidance_scale: float, inner_steps: int, lr: float):
    """Mokady et al.'s loop: for each step, fit the null states so that the guided DDIM step from the
    reconstruction lands on the inversion path, starting from the prompt's own states (Miyake et al.'s
    negative-prompt inversion, 2023: on four export scenes 41–46 dB, against 27.5–45 from the empty
    prompt's). Returns ``({timestep: (1, T, D)}, [the kept states' loss per step], [x after each step])``."""
    scheduler = ddim_scheduler(pipe)
    scheduler.set_timesteps(len(path) - 1, device=path[0].device)
    null, x = cond, path[-1]  # fit_null_step fits a copy
    nulls, losses, reached = {}, [], []
    for i, t in enumerate(scheduler.timesteps):  # high to low
        with torch.no_grad():
            pred_cond = pipe.unet(x, t, encoder_hidden_states=cond).sample
        null, loss, x = fit_null_step(
            pipe, scheduler, (x, t, path[-2 - i]), (null, pred_cond), guidance_scale, i, (inner_steps, lr)
        )
        nulls[int(t)] = null
        losses.append(loss)
        reached.append(x)  # the kept states' step, as fit_null_step measured it
    return nulls, losses, reached


def fit_null_text(pipe, path, cond, guidance_scale: float, inner_steps: int):
    """:func:`optimise_null_text` at ``NULL_TEXT_LR``, fitted again at ``NULL_TEXT_REFIT_LR`` when its last
    step misses by more than ``NULL_TEXT_REFIT`` tolerances; the fit whose last step lands closer is kept.
    Returns ``(states, losses, path, learning rate)``."""

    def fit(lr: float) -> tuple:
        return (*optimise_null_text(pipe, path, cond, guidance_scale, inner_steps, lr), lr)

    def last_loss(fitted: tuple) -> float:
        return fitted[1][-1]

    fitted = fit(NULL_TEXT_LR)
    if last_loss(fitted) > NULL_TEXT_REFIT * tolerance(len(path) - 2):  # len(path) - 2: the last step's index
        fitted = min(fitted, fit(NULL_TEXT_REFIT_LR), key=last_loss)
    return fitted


def invert(
    pipe,
    latents: torch.Tensor,
    prompt: str,
    *,
    num_inference_steps: int = SamplingConfig.steps,
    guidance_scale: float = SamplingConfig.guidance_scale,
    null_text_steps: int = 0,
    negative_prompt: str | None = None,
) -> Inversion:
    """Invert ``latents`` (the image in model space, ``(1, C, h, w)``) described by ``prompt``.

    ``null_text_steps`` > 0: null-text inversion with at most that many Adam steps per sampling step
    (needs ``guidance_scale`` > 1: without guidance DDIM inversion alone draws the image again)."""
    if null_text_steps and guidance_scale <= 1:
        raise ValueError(
            f"null-text inversion needs guidance_scale > 1 (got {guidance_scale}); without it use DDIM alone"
        )
    cond, _ = prompt_states(pipe, prompt, negative_prompt)
    re_solves = NULL_TEXT_FIXED_POINT_STEPS if null_text_steps else FIXED_POINT_STEPS
    conditioning = added_conditioning(pipe, prompt, latents)  # SDXL: its text and time ids for the bare U-Net passes
    with conditioning:
        path = ddim_invert(pipe, latents, cond, num_inference_steps, re_solves)
    scheduler = ddim_scheduler(pipe)
    scheduler.set_timesteps(num_inference_steps)
    inversion = Inversion(path[-1], path, [int(t) for t in scheduler.timesteps], fixed_point_steps=re_solves)
    if null_text_steps:
        with conditioning:
            fitted = fit_null_text(pipe, path, cond, guidance_scale, null_text_steps)
        inversion.null_embeddings, inversion.null_text_losses, inversion.null_text_path, inversion.null_text_lr = fitted
    elif guidance_scale > 1:
        inversion.null_embeddings = dict.fromkeys(inversion.timesteps, cond.detach())  # negative-prompt inversion
    return inversion


class NullText(ProcessorHook):
    """Context manager: every guided U-Net call of sampling step ``i`` gets the ``i``-th states of
    ``null_embeddings`` (in sampling order, high timesteps first) in its unconditional half (the first half
    of the batch, as diffusers' pipelines and ours order it), in its first ``rows`` rows only when given
    (an edit: 1, the source row; the targets keep the negative prompt's states, since the fitted ones carry
    the given image's look into them). ``pipe``: the pipeline that samples (its loop hands the step down,
    :mod:`crossattn.attention.steps`), or a bare U-Net (the step is counted from the timesteps).

    A :class:`~crossattn.attention.install.ProcessorHook` that installs no processor, only a forward
    pre-hook on the U-Net: removed on exit (also after an exception), refusing a second one on the model."""

    processor_type = ()  # no processor: its pre-hook is what it puts on the model
    noun = "null-text hook"

    def __init__(self, pipe, null_embeddings: dict[int, torch.Tensor], rows: int | None = None):
        from ..attention.install import unet_of
        from ..attention.steps import LoopStep

        self.pipe = pipe
        super().__init__(unet_of(pipe))
        self.null_embeddings, self.rows = null_embeddings, rows
        self.timesteps = list(null_embeddings)  # the sampling's, high to low: step i's states are at timesteps[i]
        self.clock = LoopStep()

    def prepare(self, current: dict) -> dict:
        return {}

    def add_hooks(self, undo) -> None:
        if self.null_embeddings:
            self.clock.listen(self.pipe, undo)
            undo.callback(self.model.register_forward_pre_hook(self._put, with_kwargs=True).remove)

    def _put(self, module, args, kwargs):
        t = float(torch.as_tensor(args[1] if len(args) > 1 else kwargs["timestep"]).flatten()[0])
        states = args[2] if len(args) > 2 else kwargs.get("encoder_hidden_states")
        step, _ = self.clock.take(t)
        if step >= len(self.timesteps) or states is None or states.shape[0] % 2:
            return None
        if round(t) != self.timesteps[step]:  # a check, not a lookup: the step is the loop's
            raise self.error(
                f"null-text states of step {step} were fitted at timestep {self.timesteps[step]}, the sampling is at "
                f"{t:g}: sample with DDIM and the inversion's number of steps"
            )
        half = states.shape[0] // 2
        rows = half if self.rows is None else min(self.rows, half)
        null = self.null_embeddings[self.timesteps[step]]
        states = torch.cat([null.to(states).expand(rows, -1, -1), states[rows:]])  # (2B, T, D)
        kwargs = null_rows_pooled(kwargs, rows)  # SDXL: those rows' pooled text the prompt's, as inverted
        if len(args) > 2:
            return (*args[:2], states, *args[3:]), kwargs
        return args, {**kwargs, "encoder_hidden_states": states}


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio in dB of two same-size 8-bit RGB images (PIL or arrays)."""
    import numpy as np

    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images of shapes {x.shape} and {y.shape}; PSNR compares images of one size")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))
