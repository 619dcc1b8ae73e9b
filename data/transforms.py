"""PIL images to model tensors and back. No flips: captions say left and right."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

import numpy as np
import torch
from PIL import Image, ImageOps

from data.example import Example


def square_pixels(image: Image.Image, size: int) -> np.ndarray:
    """uint8 [3, size, size]: centre square crop, bicubic antialiased resize (never flipped or stretched)."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    square = image.convert("RGB")
    if square.size != (size, size):
        square = ImageOps.fit(square, (size, size), method=Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.uint8).transpose(2, 0, 1).copy()


def stack_pixels(examples: Iterable[Example], size: int, limit: int) -> torch.Tensor:
    """The first `limit` examples' images as uint8 [N, 3, size, size] (small held-out sets)."""
    pixels = [square_pixels(example.image, size) for example in islice(examples, limit)]
    if not pixels:
        raise ValueError("no images to stack (an empty split?)")
    return torch.from_numpy(np.stack(pixels))


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """[3, size, size] float32 in [-1, 1]: centre square crop, bicubic antialiased resize."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    square = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(square, dtype=np.float32).copy())
    return pixels.permute(2, 0, 1) / 127.5 - 1.0


def to_pil(x: torch.Tensor) -> Image.Image:
    """[3, H, W] in [-1, 1] (clamped) to an RGB image."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a [3, H, W] tensor, got shape {tuple(x.shape)}")
    pixels = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy(), mode="RGB")


def collate_examples(batch: Sequence[Example | None], size: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """(pixels [B, 3, size, size], captions, keys), dropping the Nones of skipped items.

    Use with functools.partial(collate_examples, size=...) as a DataLoader collate_fn.
    """
    kept = [example for example in batch if example is not None]
    if not kept:
        return torch.empty(0, 3, size, size), [], []
    pixels = torch.stack([to_tensor(example.image, size) for example in kept])
    return pixels, [example.caption for example in kept], [example.key for example in kept]
