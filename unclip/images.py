"""Reading input images with one-line errors, and converting between PIL and [-1, 1] tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from data.images import BadImage, load_rgb, to_rgb
from data.transforms import to_pil, to_tensor
from unclip.errors import ImageFileError

ImageInput = Image.Image | str | Path


def load_image(source: ImageInput) -> Image.Image:
    """An RGB PIL image from a PIL image or a file path, converted the way training reads images
    (data.images.to_rgb: alpha on white, 16-bit and float rescaled rather than clipped)."""
    if isinstance(source, Image.Image):
        return _as_rgb(source)
    path = Path(source)
    if not path.exists():
        raise ImageFileError(f"image {path} does not exist")
    if not path.is_file():
        raise ImageFileError(f"image {path} is not a file")
    try:
        return load_rgb(path)[0]
    except BadImage as bad:
        if bad.reason == "corrupt_image" and "cannot identify" in bad.detail:
            raise ImageFileError(f"{path} is not an image PIL can read (PNG, JPEG, WebP, ...)") from None
        raise ImageFileError(f"cannot read image {path}: {bad}") from None


def _as_rgb(image: Image.Image) -> Image.Image:
    try:
        return to_rgb(image)[0]
    except BadImage as bad:
        raise ImageFileError(f"cannot convert the image to RGB: {bad}") from None


def images_to_tensor(images: list[Image.Image], size: int) -> torch.Tensor:
    """[B, 3, size, size] in [-1, 1] (centre square crop, bicubic resize)."""
    return torch.stack([to_tensor(image, size) for image in images])


def tensor_to_images(x: torch.Tensor) -> list[Image.Image]:
    return [to_pil(row) for row in x.detach().float().cpu()]
