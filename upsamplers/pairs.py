"""Training pairs: random crops of high-res images and their degraded, re-upsampled low-res versions.

High-res images are decoded once into memory (uint8); every epoch draws new crops, levels and
degradations from generators seeded by (seed, epoch, image index), so `batches(epoch, rank, world)`
is a pure function of its arguments, as core.trainer.fit requires for exact resume.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from core.errors import ConfigError
from data.example import Example
from upsamplers.config import UpsamplerConfig
from upsamplers.degrade import degrade
from upsamplers.model import upsample_bicubic


def load_images(examples: Iterable[Example], size: int, limit: int, desc: str = "load") -> torch.Tensor:
    """Up to `limit` images as uint8 [N, 3, size, size]: centre square crop, bicubic resize."""
    pixels = []
    for example in tqdm(examples, total=limit, desc=desc, dynamic_ncols=True, leave=False):
        if len(pixels) >= limit:
            break
        square = ImageOps.fit(example.image.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC)
        pixels.append(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1))
    if not pixels:
        raise ConfigError("the dataset yielded no images for the upsampler (empty split or every image skipped?)")
    return torch.from_numpy(np.stack(pixels))


def to_signed(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 in [-1, 1]."""
    return pixels.float() / 127.5 - 1.0


def pair_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 998_244_353 + index * 7_919) % (2**63)


def pick_crop(image: torch.Tensor, crop: int, tries: int, g: torch.Generator) -> torch.Tensor:
    """The most detailed (largest pixel std) of `tries` random crop windows of a [3, S, S] image: flat
    crops, most of an image with large plain areas, show an upsampler no edge to learn from."""
    side = image.shape[-1]
    windows = []
    for _ in range(tries):
        top, left = (int(torch.randint(side - crop + 1, (), generator=g)) for _ in range(2))
        windows.append(image[:, top:top + crop, left:left + crop])
    return max(windows, key=lambda w: float(w.float().std()))


def make_pair(image: torch.Tensor, cfg: UpsamplerConfig, crop: int, level_max: float,
              g: torch.Generator, crop_tries: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(high-res crop, its conditioning image, augmentation level) for one uint8 [3, S, S] image."""
    high = to_signed(pick_crop(image, crop, crop_tries, g))
    level = level_max * torch.rand((), generator=g)
    low = degrade(high[None], cfg.augment, crop // cfg.factor, level, [g])
    return high, upsample_bicubic(low, (crop, crop))[0], level


def make_batches(images: torch.Tensor, cfg: UpsamplerConfig, crop: int, batch_size: int, seed: int,
                 crop_tries: int = 1):
    """The `batches(epoch, rank, world)` function fit() consumes: (high [B,3,c,c], condition, level [B]);
    each crop is the most detailed of `crop_tries` random windows."""
    if len(images) < batch_size:
        raise ConfigError(f"{len(images)} training images are fewer than one batch of {batch_size}")

    def batches(epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(pair_seed(seed, epoch, 0)))
        mine = order[rank::world].tolist()
        for i in range(0, len(mine) - batch_size + 1, batch_size):
            pairs = [make_pair(images[j], cfg, crop, cfg.augment.train_level_max,
                               torch.Generator().manual_seed(pair_seed(seed, epoch, j + 1)), crop_tries)
                     for j in mine[i:i + batch_size]]
            high, cond, level = zip(*pairs)
            yield torch.stack(high), torch.stack(cond), torch.stack(level)

    return batches
