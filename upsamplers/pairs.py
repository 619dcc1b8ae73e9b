"""Training pairs: random crops of high-res images and their degraded, re-upsampled low-res versions.

High-res images are decoded once into image shards (data/shards.py) and streamed a buffer at a time;
every epoch draws new crops, levels and degradations from the buffer's generator, so
`batches(epoch, rank, world)` is a pure function of its arguments, as core.trainer.fit requires for
exact resume, and memory is that of the buffer whatever the dataset's size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from upsamplers.config import UpsamplerConfig
from upsamplers.degrade import degrade
from upsamplers.model import upsample_condition


def to_signed(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 in [-1, 1]."""
    return pixels.float() / 127.5 - 1.0


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
    return high, upsample_condition(low, (crop, crop), cfg.condition_resize)[0], level


def pair_batches(cfg: UpsamplerConfig, crop: int, batch_size: int, crop_tries: int = 1):
    """`prepare(rows, generator)` for ShardSet.batches: (high [B,3,c,c], condition, level [B]) from a buffer
    of uint8 images; each crop is the most detailed of `crop_tries` random windows, each pair drawn by
    its own generator seeded from the buffer's."""

    def prepare(rows: dict[str, torch.Tensor], g: torch.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
        images = rows["images"]
        seeds = torch.randint(0, 2**62, (len(images),), generator=g).tolist()
        for i in range(0, len(images) - batch_size + 1, batch_size):
            pairs = [make_pair(images[j], cfg, crop, cfg.augment.train_level_max,
                               torch.Generator().manual_seed(seeds[j]), crop_tries) for j in range(i, i + batch_size)]
            high, cond, level = zip(*pairs)
            yield torch.stack(high), torch.stack(cond), torch.stack(level)

    return prepare
