"""The noise process and samplers shared by every diffusion stage (prior, decoder, upsamplers).

Networks know nothing of schedules: a stage hands in `denoise(x, t) -> model output` and these
functions run diffusers' schedulers around it. Randomness is per sample (one generator each),
so a sample never depends on the batch it was drawn in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import (
    DDIMInverseScheduler,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UnCLIPScheduler,
)
from diffusers.utils.torch_utils import randn_tensor
from pydantic import Field
from tqdm.auto import tqdm

from core.config import Config
from core.errors import ConfigError
from core.seeds import stream_seed
from core.vlb import split_variance, vlb_loss

Schedule = Literal["cosine", "linear"]
Prediction = Literal["epsilon", "sample", "v_prediction"]
Sampler = Literal["ddpm", "ddim", "dpmpp", "unclip"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmpp", "unclip")
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_BETA_SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}


class NoiseConfig(Config):
    """How a stage is noised in training; samplers are derived from it."""

    schedule: Schedule = "cosine"
    prediction: Prediction = "epsilon"
    train_steps: int = Field(1000, gt=1)
    zero_terminal_snr: bool = False
    snr_shift: float = Field(1.0, gt=0, le=1, description="multiply the schedule's SNR by snr_shift² at every step "
                             "(simple diffusion, Hoogeboom et al. 2023): below 1, more of training and sampling "
                             "happens at the high noise levels where layout and shape are decided, which images "
                             "with large flat regions need")
    clip_x0: float | None = Field(None, gt=0, description="clamp the predicted clean sample to ±clip_x0 while "
                                  "sampling (Karlo's schedulers: 1 for images, 5 for its prior's standardised "
                                  "embeddings); None: no clamp")

    def scheduler_config(self) -> dict:
        config = {
            "num_train_timesteps": self.train_steps,
            "beta_schedule": _BETA_SCHEDULES[self.schedule],
            "prediction_type": self.prediction,
            "rescale_betas_zero_snr": self.zero_terminal_snr,
            "clip_sample": self.clip_x0 is not None,
            "timestep_spacing": "trailing",
        }
        if self.clip_x0 is not None:
            config["clip_sample_range"] = self.clip_x0
        if self.snr_shift != 1.0:
            config["trained_betas"] = shifted_betas(self.schedule, self.train_steps, self.snr_shift).tolist()
        return config


def shifted_betas(schedule: Schedule, steps: int, shift: float) -> torch.Tensor:
    """The betas whose cumulative alphas have log SNR = the schedule's log SNR + 2 log(shift)."""
    base = DDPMScheduler(num_train_timesteps=steps, beta_schedule=_BETA_SCHEDULES[schedule]).alphas_cumprod.double()
    alpha_bar = torch.sigmoid(torch.logit(base) + 2 * math.log(shift))
    previous = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return (1 - alpha_bar / previous).clamp(max=0.999).float()


def training_scheduler(noise: NoiseConfig) -> DDPMScheduler:
    return DDPMScheduler(variance_type="fixed_small", **noise.scheduler_config())


class SamplingDefaults(Config):
    """How a model samples where the user says nothing; unset fields fall back to the cascade's defaults
    (unclip/settings.py). A model converted from Karlo carries its pipeline's."""

    sampler: Sampler | None = None
    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0)
    best_of: int | None = Field(None, ge=1, description="this model's candidates per sample, the best kept: the "
                                "pipeline's prior_best_of in a prior's config, its decoder_best_of in a decoder's")

    def filled(self, **measured) -> SamplingDefaults:
        """These defaults, each unset one taken from `measured` (the settings the stage was evaluated with,
        saved with the trained model so that generation samples it as its gate did)."""
        return self.override(**{k: v for k, v in measured.items() if getattr(self, k) is None})


def sampling_scheduler(noise: NoiseConfig, sampler: Sampler, steps: int, *, threshold: float | None = None,
                       learned_variance: bool = False):
    """A diffusers scheduler for inference with `steps` steps; `threshold` turns on Imagen's dynamic
    thresholding of the predicted clean sample (ratio 0.995, max value `threshold`). `learned_variance`:
    the model's output carries a variance the unclip sampler uses (the others take the mean channels).
    Every stage samples through this one factory; a setting it cannot honour is a ConfigError."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose {', '.join(SAMPLERS)}")
    if not 1 <= steps <= noise.train_steps:
        raise ConfigError(f"sampling steps must be between 1 and {noise.train_steps}, got {steps}")
    if threshold is not None and threshold <= 0:
        raise ConfigError(f"threshold must be positive, got {threshold}")
    if sampler == "unclip":
        try:
            return unclip_scheduler(noise, steps, learned_variance, threshold)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    cfg = noise.scheduler_config()
    extra = {"thresholding": True, "sample_max_value": threshold, "dynamic_thresholding_ratio": 0.995} if threshold else {}
    if sampler == "ddim":
        sched = DDIMScheduler(set_alpha_to_one=True, **cfg, **extra)
    elif sampler == "dpmpp":
        # DPM-Solver++ has no x0 clamp; it keeps zero terminal SNR (it clamps the last alpha_bar to 2**-24),
        # so a zero-SNR model samples on the schedule it was trained on
        cfg.pop("clip_sample")
        cfg.pop("clip_sample_range", None)
        sched = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
                                            final_sigmas_type="zero", **cfg, **extra)
    else:
        sched = DDPMScheduler(variance_type="fixed_small", **cfg, **extra)
    sched.set_timesteps(steps)
    return sched


def unclip_scheduler(noise: NoiseConfig, steps: int, learned_variance: bool = False,
                     threshold: float | None = None) -> UnCLIPScheduler:
    """Karlo's sampler (diffusers' UnCLIPScheduler): DDPM steps over Karlo's timestep spacing, the
    variance fixed (posterior's, log-clamped) or chosen by the model's extra channels."""
    unsupported = {"schedule": noise.schedule != "cosine", "prediction": noise.prediction == "v_prediction",
                   "zero_terminal_snr": noise.zero_terminal_snr, "snr_shift": noise.snr_shift != 1.0,
                   "threshold": threshold is not None}
    wrong = [name for name, bad in unsupported.items() if bad]
    if wrong:
        raise ValueError(f"the unclip sampler takes the cosine schedule with epsilon or sample prediction, "
                         f"without {', '.join(wrong)}")
    if steps < 2:
        raise ValueError(f"the unclip sampler needs at least 2 steps, got {steps}")
    sched = UnCLIPScheduler(num_train_timesteps=noise.train_steps, prediction_type=noise.prediction,
                            variance_type="learned_range" if learned_variance else "fixed_small_log",
                            clip_sample=noise.clip_x0 is not None, clip_sample_range=noise.clip_x0 or 1.0)
    sched.set_timesteps(steps)
    return sched


def generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One CPU generator per sample: the same seed gives the same sample on any device, in any batch.
    Seeds outside [0, 2**32) are hashed to 32 bits (torch would drop the high bits)."""
    return [torch.Generator("cpu").manual_seed(int(s) if 0 <= int(s) < 2**32 else stream_seed(s, "fold"))
            for s in seeds]


def initial_noise(seeds: Sequence[int], shape: Sequence[int], device, dtype=torch.float32) -> torch.Tensor:
    """x_T for len(seeds) samples of `shape` (without the batch dimension)."""
    noise = randn_tensor((len(seeds), *shape), generator=generators(seeds), device=torch.device("cpu"))
    return noise.to(device=device, dtype=dtype)


def add_noise(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return scheduler.add_noise(x0, noise, t)


def training_target(scheduler: DDPMScheduler, x0, noise, t) -> torch.Tensor:
    """What the network is trained to output under the scheduler's parameterisation."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    return scheduler.get_velocity(x0, noise, t)


@dataclass(frozen=True)
class LossWeights:
    """Where a diffusion loss looks: the share of timesteps drawn from the schedule's low-noise end (the first
    `low_noise_end` of it), Min-SNR-γ (None: plain MSE) and the extra weight on the clean image's outlines.
    The stage's settings validate them (e.g. DecoderSettings)."""

    low_noise_share: float = 0.0
    low_noise_end: float = 0.25
    min_snr_gamma: float | None = None
    outline_weight: float = 0.0


def training_timesteps(steps: int, batch: int, device: torch.device | str = "cpu", low_noise_share: float = 0.0,
                       low_noise_end: float = 0.25) -> torch.Tensor:
    """Uniform over the schedule, except a `low_noise_share` of them uniform over its first `low_noise_end`."""
    t = torch.randint(0, steps, (batch,), device=device)
    if low_noise_share:
        low = torch.rand(batch, device=device) < low_noise_share
        end = max(1, round(low_noise_end * steps))
        t = torch.where(low, torch.randint(0, end, (batch,), device=device), t)
    return t


def snr_weights(scheduler, t: torch.Tensor, gamma: float | None) -> torch.Tensor | None:
    """Min-SNR-γ weights expressed for the scheduler's prediction type (None: plain MSE)."""
    if gamma is None:
        return None
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=gamma)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return clipped / snr.clamp(min=1e-8)
    if kind == "v_prediction":
        return clipped / (snr + 1)
    return clipped


def outline_weights(x0: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-pixel loss weights [B, 1, H, W]: 1 + strength × the image's edge strength (the colour change
    to the right and below, spread to the 3×3 neighbourhood, scaled to 1 at each image's strongest edge)."""
    dx = F.pad((x0[..., :, 1:] - x0[..., :, :-1]).abs(), (0, 1))
    dy = F.pad((x0[..., 1:, :] - x0[..., :-1, :]).abs(), (0, 0, 0, 1))
    edges = F.max_pool2d((dx + dy).sum(1, keepdim=True), 3, stride=1, padding=1)
    return 1 + strength * edges / edges.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def sample_error(diff: torch.Tensor, pixel: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample mean squared error [B] of `diff`, images weighted per pixel by `pixel` [B, 1, H, W] where given."""
    if pixel is None:
        return diff.pow(2).flatten(1).mean(1)
    return (diff.pow(2) * pixel).sum(dim=(1, 2, 3)) / (pixel.sum(dim=(1, 2, 3)) * diff.shape[1])


def diffusion_loss(scheduler: DDPMScheduler, x0: torch.Tensor, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   weights: LossWeights = LossWeights(), learned_variance: bool = False) -> torch.Tensor:
    """The training loss of every diffusion stage: noise `x0` at sampled timesteps, `predict(x_t, t)`, and the
    (weighted) MSE against the scheduler's target; with `learned_variance`, the MSE trains the mean channels and
    the variational bound the variance ones (core.vlb). The noise is drawn in the standard layout, then given
    x0's, so a seed means the same numbers in either; all randomness comes from the global RNG (fit() seeds it)."""
    channels_last = x0.dim() == 4 and not x0.is_contiguous()
    memory = torch.channels_last if channels_last else torch.contiguous_format
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype).contiguous(memory_format=memory)
    t = training_timesteps(scheduler.config.num_train_timesteps, x0.shape[0], x0.device, weights.low_noise_share,
                           weights.low_noise_end)
    x_t = scheduler.add_noise(x0, noise, t)
    out = predict(x_t, t).float()
    vlb = 0.0
    if learned_variance:
        out, v = split_variance(out, x0.shape[1])
        vlb = vlb_loss(scheduler, x0, x_t, t, out, v).mean()
    pixel = outline_weights(x0.float(), weights.outline_weight) if weights.outline_weight else None
    err = sample_error(out - training_target(scheduler, x0, noise, t).float(), pixel)
    snr = snr_weights(scheduler, t, weights.min_snr_gamma)
    return (err.mean() if snr is None else (err * snr).mean()) + vlb


def guided(model: Callable[..., torch.Tensor], cond: Mapping[str, torch.Tensor],
           uncond: Mapping[str, torch.Tensor], scale: float | torch.Tensor,
           guided_channels: int | None = None,
           prepare: Callable[[dict[str, torch.Tensor]], Mapping[str, object]] | None = None) -> Denoise:
    """Classifier-free guidance as one wrapper: conditional and unconditional branches share one
    batched forward pass; scale 1 is the plain conditional model. A tensor scale [B] gives each sample
    its own (0 to 1 mixes two conditions: uncond + w·(cond − uncond)). With `guided_channels`, only
    those first output channels are guided and the rest (a learned variance) come from the conditional
    branch, as in GLIDE and diffusers' unCLIP pipeline. `prepare` turns the (batched) conditions into the
    model's keyword arguments once, for work that does not change from step to step."""
    prepare = prepare or dict
    if not isinstance(scale, torch.Tensor) and scale == 1.0:
        plain = prepare(dict(cond))
        return lambda x, t: model(x, t, **plain)
    both = prepare({k: torch.cat([uncond[k], cond[k]]) for k in cond})

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out_uncond, out_cond = model(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
        w = scale.to(x.device, torch.float32).view(-1, *[1] * (x.ndim - 1)) if torch.is_tensor(scale) else scale
        if guided_channels is None:
            return out_uncond + w * (out_cond - out_uncond)
        n = guided_channels
        return torch.cat([out_uncond[:, :n] + w * (out_cond[:, :n] - out_uncond[:, :n]), out_cond[:, n:]], dim=1)

    return denoise


def mean_channels(denoise: Denoise, channels: int = 3) -> Denoise:
    """A learned-variance model's mean prediction alone, for the samplers that take no variance."""
    return lambda x, t: denoise(x, t)[:, :channels]


def sample(denoise: Denoise, scheduler, x_t: torch.Tensor, *, seeds: Sequence[int] | None = None,
           eta: float = 0.0, progress: bool = False, desc: str = "sample",
           callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Run `scheduler` from x_T to x_0. Stochastic steps (DDPM, DDIM with eta > 0) draw their noise
    from per-sample generators seeded from `seeds`, so samples are batch-size independent."""
    gens = generators([stream_seed(s, "sampler") for s in seeds]) if seeds is not None else None
    x = x_t
    timesteps = scheduler.timesteps
    for i, t in enumerate(tqdm(timesteps, desc=desc, disable=not progress, leave=False)):
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        out = denoise(scheduler.scale_model_input(x, t), tt)
        kwargs = {}
        if isinstance(scheduler, DDIMScheduler):
            kwargs["eta"] = eta
            if eta > 0:
                kwargs["variance_noise"] = _noise_like(x, gens)
        elif isinstance(scheduler, DDPMScheduler):
            kwargs["generator"] = gens
        elif isinstance(scheduler, UnCLIPScheduler):  # it recomputes each step's beta from the next timestep
            kwargs["generator"] = gens
            kwargs["prev_timestep"] = int(timesteps[i + 1]) if i + 1 < len(timesteps) else None
        x = scheduler.step(out, t, x, **kwargs).prev_sample
        if callback is not None:
            callback(i, x)
    return x


def _noise_like(x: torch.Tensor, gens: list[torch.Generator] | None) -> torch.Tensor:
    if gens is None:
        return torch.randn_like(x)
    return randn_tensor(tuple(x.shape), generator=gens, device=torch.device("cpu")).to(x.device, x.dtype)


@torch.no_grad()
def ddim_invert(denoise: Denoise, noise: NoiseConfig, x0: torch.Tensor, steps: int,
                progress: bool = False) -> torch.Tensor:
    """Deterministic DDIM inversion x_0 → x_T; DDIM (eta 0) with the same steps maps it back.

    An x0-predicting model's output is turned into ε at the level it was queried at: diffusers'
    inverse scheduler would divide by the zero noise level of the clean start (NaN)."""
    config = noise.scheduler_config()
    from_sample = config["prediction_type"] == "sample"
    inverse = DDIMInverseScheduler(**(config | {"prediction_type": "epsilon"} if from_sample else config))
    inverse.set_timesteps(steps)
    x = x0
    for t in tqdm(inverse.timesteps, desc="invert", disable=not progress, leave=False):
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        out = denoise(x, tt)
        if from_sample:
            alpha_bar = inverse.alphas_cumprod[int(t)].to(x.device, x.dtype)
            out = (x - alpha_bar.sqrt() * out) / (1 - alpha_bar).sqrt()
        x = inverse.step(out, t, x).prev_sample
    return x
