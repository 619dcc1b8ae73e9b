"""A dataset split held in memory as uint8 pixels at one resolution (decoded once, reused every epoch)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from data.example import Example


@dataclass
class ImageBank:
    pixels: torch.Tensor  # uint8 [N, 3, S, S]
    captions: list[str]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def square(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bicubic) and centre-crop: never flips, never stretches."""
    w, h = image.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def materialise(examples: Iterable[Example], size: int, total: int | None = None, desc: str = "load") -> ImageBank:
    pixels, captions, keys = [], [], []
    for ex in tqdm(examples, total=total, desc=desc, dynamic_ncols=True, leave=False):
        pixels.append(np.asarray(square(ex.image, size), dtype=np.uint8).transpose(2, 0, 1))
        captions.append(ex.caption)
        keys.append(ex.key)
    if not pixels:
        return ImageBank(torch.zeros(0, 3, size, size, dtype=torch.uint8), [], [])
    return ImageBank(torch.from_numpy(np.stack(pixels)), captions, keys)
