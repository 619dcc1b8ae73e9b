"""Upsampling images with a trained stage: augment the low-res input, then a few-step sampler.

The sampler is core.diffusion's; this module only builds the `denoise(x, t)` callable around the
network: conditioning on the bicubic-upsampled input, the precision (fp32, bf16 weights, or `auto`: the
faster here, core.precision), optional tiling.
Tiled inference runs the network on overlapping tiles at every step and blends their outputs with
a cosine window (weights sum to one across each overlap), so large images fit in little memory
and come out seamless; with `norm="pixel"` the network is local and tiled ≈ whole-image output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from core.diffusion import (
    Denoise,
    Sampler,
    generators,
    initial_noise,
    mean_channels,
    sample,
    sampling_scheduler,
)
from core.errors import ConfigError
from core.precision import DTYPES, Precision, Resolved, check_precision, inference_copy, resolve
from core.seeds import stream_seed
from upsamplers.config import check_tiling
from upsamplers.io import as_model
from upsamplers.model import Upsampler, upsample_condition

Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one side: stride tile - overlap, the last tile flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _ramp(n: int, overlap: int, lead: bool, trail: bool) -> torch.Tensor:
    """Blending weights along one side of a tile. Inside an overlap the outer quarter (next to the
    tile's edge, where zero padding stands in for the missing context) gets weight 0, the middle
    half a cosine ramp; the neighbour's window mirrors it, so the weights sum to one."""
    w = torch.ones(n)
    margin, width = overlap // 4, overlap - 2 * (overlap // 4)
    if width > 0:
        up = torch.cat([torch.zeros(margin), torch.sin(0.5 * math.pi * (torch.arange(width) + 0.5) / width) ** 2,
                        torch.ones(margin)])
        if lead:
            w[:overlap] = up
        if trail:
            w[n - overlap:] = up.flip(0)
    return w


def tiled(net: Net, tile: int, overlap: int) -> Net:
    """Run `net(x, t, condition)` tile by tile and blend the outputs (tiles align with the input)."""

    def run(x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height <= tile and width <= tile:
            return net(x, t, condition)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        total = torch.zeros((1, 1, height, width), dtype=torch.float32, device=x.device)
        ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
        for top in ys:
            th = min(tile, height)
            wy = _ramp(th, overlap, top > 0, top + th < height)
            for left in xs:
                tw = min(tile, width)
                wx = _ramp(tw, overlap, left > 0, left + tw < width)
                weight = (wy[:, None] * wx[None, :]).to(x.device)
                part = (..., slice(top, top + th), slice(left, left + tw))
                out[part] += net(x[part], t, condition[part]).float() * weight
                total[part] += weight
        return out / total

    return run


def check_low_res(model: Upsampler, low_res: torch.Tensor) -> tuple[int, int]:
    """The output size for `low_res`, or a ConfigError saying what is wrong with it."""
    if not isinstance(low_res, torch.Tensor) or low_res.ndim != 4 or low_res.shape[1] != 3:
        shape = tuple(low_res.shape) if isinstance(low_res, torch.Tensor) else type(low_res).__name__
        raise ConfigError(f"low-res images must be a [B, 3, h, w] tensor in [-1, 1], got {shape}")
    if not low_res.is_floating_point():
        raise ConfigError(f"low-res images must be floats in [-1, 1], got dtype {low_res.dtype}")
    if low_res.numel() and (low_res.min() < -1.01 or low_res.max() > 1.01):
        raise ConfigError("low-res images must lie in [-1, 1] (got values outside; uint8 or [0, 1] input?)")
    cfg = model.cfg
    height, width = low_res.shape[-2] * cfg.factor, low_res.shape[-1] * cfg.factor
    if height % cfg.model.size_multiple or width % cfg.model.size_multiple:
        raise ConfigError(f"output {height}x{width} (= input x {cfg.factor}) must have sides that are multiples of "
                          f"{cfg.model.size_multiple} for this U-Net")
    return height, width


def condition_for(model: Upsampler, low_res: torch.Tensor, level: float, seeds: Sequence[int]) -> torch.Tensor:
    """The conditioning image at inference: Gaussian noise of std level * noise_max (one generator per
    image), then bicubic upsampling. Blur, resizing and JPEG only simulate a previous stage's artefacts
    in training; a real previous-stage output has its own, so inference adds only the noise of
    cascaded diffusion models, at the level the network is told."""
    cfg = model.cfg
    low = low_res.float().cpu()
    std = level * cfg.augment.noise_max
    if std > 0:
        # its own stream, apart from x_T (the seed) and the sampler's noise
        gens = generators([stream_seed(s, "augment") for s in seeds])
        low = (low + std * torch.stack([torch.randn(low.shape[1:], generator=g) for g in gens])).clamp(-1, 1)
    return upsample_condition(low, (low.shape[-2] * cfg.factor, low.shape[-1] * cfg.factor), cfg.condition_resize)


def upsample(
    model: Upsampler | str | Path,
    low_res: torch.Tensor,
    *,
    steps: int | None = None,
    sampler: Sampler | None = None,
    aug_level: float | None = None,
    seeds: Sequence[int] | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    eta: float = 0.0,
    precision: Precision = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """Upsample [B, 3, h, w] images in [-1, 1] by the stage's factor; returns [B, 3, h*f, w*f] in [-1, 1].

    steps/sampler/aug_level default to the config (DDIM, 27 or 15 steps, mild augmentation). `tile`
    None uses the config's tile (None: whole image), 0 forces the whole image, N uses N×N tiles with
    `overlap` (default: the config's). Seeds (default 0..B-1) fix the noise per image."""
    model = as_model(model)
    cfg = model.cfg
    height, width = check_low_res(model, low_res)
    seeds = list(range(low_res.shape[0])) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != low_res.shape[0]:
        raise ConfigError(f"got {len(seeds)} seeds for {low_res.shape[0]} images")
    level = cfg.aug_level if aug_level is None else float(aug_level)
    if not 0 <= level <= 1:
        raise ConfigError(f"aug_level must lie in [0, 1], got {level}")
    tile = cfg.tile if tile is None else (tile or None)
    overlap = cfg.tile_overlap if overlap is None else overlap
    if tile is not None:
        try:
            check_tiling(tile, overlap, cfg.model.size_multiple)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    sampler = sampler or cfg.sampler
    try:
        scheduler = sampling_scheduler(cfg.noise, sampler, steps or cfg.sample_steps,
                                       learned_variance=cfg.model.learned_variance)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    last_step = int(scheduler.timesteps[-1])

    device = next(model.parameters()).device
    # Channels-last on the CPU for pixel-norm networks, where it was measured (docs/experiments/speed.md):
    # GroupNorm ones (Karlo's) keep the default layout, whose outputs match diffusers' exactly (their few
    # ε steps from t = 999 magnify a 1e-6 to 1e-4). Not measured on GPUs, so left as it is there.
    cpu_fast = device.type == "cpu" and cfg.model.norm == "pixel"
    memory = torch.channels_last if cpu_fast else torch.contiguous_format
    condition = condition_for(model, low_res, level, seeds).to(device).contiguous(memory_format=memory)
    levels = torch.full((len(seeds),), level, device=device)
    x_t = initial_noise(seeds, (3, height, width), device)

    def net_in(chosen: Resolved) -> Net:
        network = inference_copy(model, chosen, torch.channels_last if cpu_fast else None)
        dtype = DTYPES[chosen]

        def net(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            out = network(x.to(dtype).contiguous(memory_format=memory), t, cond.to(dtype).contiguous(memory_format=memory),
                          levels, final=int(t[0]) == last_step)
            return out.float().contiguous()
        return tiled(net, tile, overlap) if tile is not None else net

    def probe(chosen: Resolved) -> None:
        with torch.inference_mode():
            net_in(chosen)(x_t, torch.full((len(seeds),), last_step, device=device), condition)

    run = net_in(resolve(check_precision(precision), f"upsampler{cfg.stage}", device, probe,
                         key=(tuple(x_t.shape), tile, cfg.fingerprint()), rounds=1))
    denoise: Denoise = lambda x, t: run(x, t, condition)  # noqa: E731
    if cfg.model.learned_variance and sampler != "unclip":
        denoise = mean_channels(denoise)
    with torch.inference_mode():
        out = sample(denoise, scheduler, x_t, seeds=seeds, eta=eta, progress=progress, desc="upsample")
    return out.clamp(-1, 1)
