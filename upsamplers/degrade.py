"""Noise-conditioning augmentation: how a high-res image becomes the low-res input an upsampler sees.

Stage 1 (`blur`): bicubic down-scaling, Gaussian blur (kernel 3, σ 0.6), Gaussian noise.
Stage 2 (`bsr`, after BSRGAN / latent-diffusion's `degradation_bsrgan_variant`): blur (isotropic or
anisotropic), resizing with a random kernel, Gaussian noise and JPEG, in a random order.
A `level` in [0, 1] per image scales every strength: random in training, mild at inference.

Everything runs on the fly and draws only from the per-image torch.Generators it is given, so the
same seeds give the same degradations in any batch. Images are [B, 3, H, W] in [-1, 1].
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from upsamplers.config import AugmentConfig, Interpolation

MIN_SIGMA = 0.1  # blurs narrower than this (in low-res pixels) are skipped
MAX_KERNEL = 31


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, angle: float = 0.0) -> torch.Tensor:
    """A normalised [size, size] Gaussian with axis σs (pixels) rotated by `angle` radians."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy
    kernel = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).float()


def blur(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise convolution of [3, H, W] with a [k, k] kernel, reflecting at the borders."""
    k = kernel.shape[-1]
    pad = k // 2
    mode = "reflect" if pad < min(image.shape[-2:]) else "replicate"
    padded = F.pad(image[None], (pad, pad, pad, pad), mode=mode)
    weight = kernel.to(image)[None, None].expand(image.shape[0], 1, k, k)
    return F.conv2d(padded, weight, groups=image.shape[0])[0]


def resize(image: torch.Tensor, size: tuple[int, int], kernel: Interpolation = "bicubic") -> torch.Tensor:
    """[3, H, W] to [3, *size]; antialiased when shrinking."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if kernel == "area":
        out = F.interpolate(image[None], size=size, mode="area")
    else:
        out = F.interpolate(image[None], size=size, mode=kernel, align_corners=False, antialias=True)
    return out[0].clamp(-1, 1)


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """A JPEG round trip through PIL at `quality` (1-95)."""
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, "JPEG", quality=int(quality))
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1) / 127.5 - 1.0


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _noise(image: torch.Tensor, std: float, g: torch.Generator, gray: bool) -> torch.Tensor:
    shape = (1, *image.shape[1:]) if gray else image.shape
    return image + std * torch.randn(shape, generator=g)


def degrade_blur(image: torch.Tensor, cfg: AugmentConfig, size: tuple[int, int], level: float,
                 g: torch.Generator) -> torch.Tensor:
    """Stage 1: bicubic to `size`, the fixed Gaussian blur, then noise of std level * noise_max."""
    image = resize(image, size, "bicubic")
    image = blur(image, gaussian_kernel(cfg.blur_kernel, cfg.blur_sigma))
    std = level * cfg.noise_max
    noise = torch.randn(image.shape, generator=g)
    return image + std * noise if std > 0 else image


def degrade_bsr(image: torch.Tensor, cfg: AugmentConfig, size: tuple[int, int], level: float,
                 g: torch.Generator) -> torch.Tensor:
    """Stage 2: the four BSR operations in an order drawn from `g`, strengths scaled by `level`."""
    for op in torch.randperm(4, generator=g).tolist():
        if op == 0:  # blur: σ in low-res pixels, converted to the current resolution
            top = level * cfg.blur_sigma_max
            sx = _uniform(g, MIN_SIGMA, max(MIN_SIGMA, top))
            aniso = bool(torch.rand((), generator=g) < 0.5)
            sy, angle = (_uniform(g, MIN_SIGMA, max(MIN_SIGMA, top)), _uniform(g, 0, math.pi)) if aniso else (sx, 0.0)
            if top >= MIN_SIGMA:
                scale = image.shape[-1] / size[1]
                k = min(MAX_KERNEL, 2 * math.ceil(3 * max(sx, sy) * scale) + 1)
                image = blur(image, gaussian_kernel(k, sx * scale, sy * scale, angle))
        elif op == 1:  # resize to the low-res size with a random kernel
            kernel = cfg.kernels[int(torch.randint(len(cfg.kernels), (), generator=g))]
            image = resize(image, size, kernel)
        elif op == 2:  # Gaussian noise, colour or grey
            std = _uniform(g, 0.0, level * cfg.noise_max)
            gray = bool(torch.rand((), generator=g) < 0.4)
            if std > 0:
                image = _noise(image, std, g, gray)
        else:  # JPEG at a random quality, lower with the level
            worst = round(95 - level * (95 - cfg.jpeg_min_quality))
            quality = int(torch.randint(worst, 96, (), generator=g))
            if level > 0:
                image = jpeg(image, quality)
    return image


def degrade(images: torch.Tensor, cfg: AugmentConfig, size: int | tuple[int, int], levels: torch.Tensor | float,
            generators: Sequence[torch.Generator]) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] → degraded [B, 3, *size] in [-1, 1], one generator per image.

    Used in training on high-res crops (which it also down-scales) and at inference on the
    low-res input (already at `size`, so only the augmentation applies)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
    if len(generators) != images.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for {images.shape[0]} images")
    levels = torch.as_tensor(levels, dtype=torch.float32).expand(images.shape[0])
    if bool(((levels < 0) | (levels > 1)).any()):
        raise ValueError(f"augmentation levels must lie in [0, 1], got {levels.tolist()}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    step = degrade_blur if cfg.kind == "blur" else degrade_bsr
    out = [step(img.float().cpu(), cfg, size, float(lv), g) for img, lv, g in zip(images, levels, generators)]
    return torch.stack(out).clamp(-1, 1).to(images.device)
