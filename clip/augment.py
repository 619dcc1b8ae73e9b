"""Image degradations for CLIP training, so the CLIP reads generated images as it reads real ones.

A CLIP trained on clean renderings only reads a decoded image's soft edges and faint halos as a
different shape: on 300 images decoded by the demo's decoder it got the shape right 44% of the time,
while a pixel check found the right shape in 93%. The CLIP is the project's measuring instrument and
the prior's and decoder's conditioning, so it should not depend on how crisp an image is. Each
training image is, with probability `probability`, rescaled down and back up, given halos (unsharp
masking), blurred, slightly shifted, and given fine and smooth noise. None of these changes what a
caption says about the image: there is no flip, crop or colour change.

`upsamplers/degrade.py` degrades one image at a time with its own generator (for data pipelines);
this runs on whole batches on the training device, inside the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from core.config import Config


class ClipAugmentConfig(Config):
    probability: float = Field(0.0, ge=0, le=1, description="share of training images degraded (0: off)")
    min_scale: float = Field(0.5, gt=0, le=1, description="smallest down-then-up rescale, as a share of the side")
    max_blur: float = Field(1.0, ge=0, description="largest Gaussian blur sigma, in pixels of the CLIP's input")
    max_shift: float = Field(0.03, ge=0, lt=0.25, description="largest shift, as a share of the side")
    max_noise: float = Field(0.05, ge=0, description="largest Gaussian noise std, on [0, 1] pixels")
    max_ringing: float = Field(0.0, ge=0, description="largest unsharp-mask amount: halos beside edges")
    max_blotch: float = Field(0.0, ge=0, description="largest std of smooth (1/8-resolution) noise: mottled areas")


def degrade(x: torch.Tensor, cfg: ClipAugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Degrade a random share of images [B, 3, S, S] with values in [0, 1]; the rest pass unchanged."""
    if cfg.probability == 0 or len(x) == 0:
        return x
    chosen = (torch.rand(len(x), generator=generator, device=x.device) < cfg.probability).nonzero().squeeze(1)
    out = x.clone()
    if len(chosen):
        out[chosen] = _degrade_all(x[chosen], cfg, generator)
    return out


def _degrade_all(x: torch.Tensor, cfg: ClipAugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    b, _, size, _ = x.shape

    def uniform(high: float, *shape: int) -> torch.Tensor:
        return torch.rand(b, *shape, generator=generator, device=x.device) * high

    scale = 1 - uniform(1 - cfg.min_scale)
    sigma = uniform(cfg.max_blur)
    shift = (uniform(2.0, 2) - 1) * cfg.max_shift * 2  # grid units: 2 is the whole side
    noise, ringing, blotch = (uniform(high, 1, 1, 1) for high in (cfg.max_noise, cfg.max_ringing, cfg.max_blotch))

    out = _rescale(x, scale, size)
    if cfg.max_ringing:
        out = out + ringing * (out - _blur(out, torch.full((b,), 2.0, device=x.device)))
    if cfg.max_blur:
        out = _blur(out, sigma)
    if cfg.max_shift:
        out = _shift(out, shift)
    if cfg.max_noise:
        out = out + noise * torch.randn(out.shape, generator=generator, device=x.device)
    if cfg.max_blotch:
        low = max(1, size // 8)
        smooth = torch.randn(b, 3, low, low, generator=generator, device=x.device)
        out = out + blotch * F.interpolate(smooth, size=(size, size), mode="bilinear", align_corners=False)
    return out.clamp(0, 1)


def _rescale(x: torch.Tensor, scale: torch.Tensor, size: int, step: int = 4) -> torch.Tensor:
    """Down to scale × size pixels (area; rounded to `step`) and back up (bilinear): a smaller image's softness."""
    out = x.clone()
    sides = ((scale * size / step).round() * step).clamp(min=step).long()
    for side in sides.unique().tolist():
        if side >= size:
            continue
        idx = (sides == side).nonzero().squeeze(1)
        small = F.interpolate(x[idx], size=(side, side), mode="area")
        out[idx] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return out


def _blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Per-image Gaussian blur, separable, as grouped convolutions (sigma 0 leaves the image as it is)."""
    b, c, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    weights = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None].to(x.dtype).clamp(min=1e-3) ** 2))
    weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B*C, K]
    flat = F.pad(x.reshape(1, b * c, h, w), (radius,) * 4, mode="replicate")
    flat = F.conv2d(flat, weights[:, None, None, :], groups=b * c)
    flat = F.conv2d(flat, weights[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


def _shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Translate each image by shift [B, 2] (grid units, 2 = the whole side), repeating the border."""
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = shift.to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
