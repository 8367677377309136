"""A cheap training-progress signal for *where* things are drawn (``shared/TRIALS.md``).

For "a red circle at the {position}" and pure noise at a high-noise timestep, the model's predicted
clean image x̂0 shows where it means to put the object long before samples do. Its ink-weighted
centre of mass per position word (and whether that centre already satisfies the grammar's rule)
is logged with every sample grid, so a long run tells early whether position is being learnt.
"""

from __future__ import annotations

import torch


def predicted_clean(noise_scheduler, x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """x̂0 from the model output: ε, v (x̂0 = √ᾱ·x_t − √(1−ᾱ)·v) or the sample itself."""
    alpha_bar = noise_scheduler.alphas_cumprod.to(x_t.device)[t].float()[:, None, None, None]  # (B, 1, 1, 1)
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    kind = noise_scheduler.config.prediction_type
    if kind == "v_prediction":
        return a * x_t - s * pred
    if kind == "epsilon":
        return (x_t - s * pred) / a.clamp(min=1e-4)
    return pred


def ink_centre(images: torch.Tensor) -> torch.Tensor:
    """Centre of mass (x, y) of the distance from white, in pixels (pixel i spans [i, i+1]): ``(B, 2)``."""
    ink = ((1 - images.clamp(-1, 1)) / 2).mean(dim=1)  # (B, H, W): 0 on white
    h, w = ink.shape[-2:]
    ys = torch.arange(h, dtype=ink.dtype, device=ink.device) + 0.5
    xs = torch.arange(w, dtype=ink.dtype, device=ink.device) + 0.5
    mass = ink.sum(dim=(1, 2)).clamp(min=1e-8)  # (B,)
    cx = (ink.sum(dim=1) * xs).sum(dim=1) / mass  # (B,)
    cy = (ink.sum(dim=2) * ys).sum(dim=1) / mass  # (B,)
    return torch.stack([cx, cy], dim=1)  # (B, 2)


@torch.no_grad()
def position_probe(pipe, noise_scheduler, timestep: int = 900, seeds: int = 4, subject: str = "a red circle") -> dict:
    """``{"timestep", "centres": {position: [x, y]}, "hits": k}`` averaged over ``seeds`` noises."""
    from ..data.captions import POSITIONS, satisfies_position

    unet = pipe.unet
    res, channels = unet.config.sample_size, unet.config.in_channels
    noise = torch.randn((seeds, channels, res, res), generator=torch.Generator().manual_seed(0))  # (S, C, H, W)
    x_t = noise.repeat(len(POSITIONS), 1, 1, 1).to(pipe.device, unet.dtype)  # (P*S, C, H, W), same noise per word
    prompts = [f"{subject} at the {p}" for p in POSITIONS for _ in range(seeds)]
    t = torch.full((len(prompts),), timestep, device=pipe.device)
    pred = unet(x_t, t, encoder_hidden_states=pipe.encode_prompt(prompts)).sample
    centres = ink_centre(predicted_clean(noise_scheduler, x_t, t, pred)).view(len(POSITIONS), seeds, 2).mean(1)
    found = {p: [round(float(c[0]), 2), round(float(c[1]), 2)] for p, c in zip(POSITIONS, centres, strict=True)}
    hits = sum(satisfies_position(tuple(found[p]), p, res) for p in POSITIONS)
    return {"timestep": timestep, "centres": found, "hits": hits}
