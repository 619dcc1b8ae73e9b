"""Reading input images with one-line errors, and converting between PIL and [-1, 1] tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from data.transforms import to_pil, to_tensor
from unclip.errors import ImageFileError

ImageInput = Image.Image | str | Path


def load_image(source: ImageInput) -> Image.Image:
    """An RGB PIL image from a PIL image or a file path."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    path = Path(source)
    if not path.exists():
        raise ImageFileError(f"image {path} does not exist")
    if not path.is_file():
        raise ImageFileError(f"image {path} is not a file")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise ImageFileError(f"{path} is not an image PIL can read (PNG, JPEG, WebP, ...)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"cannot read image {path}: {err}") from None


def images_to_tensor(images: list[Image.Image], size: int) -> torch.Tensor:
    """[B, 3, size, size] in [-1, 1] (centre square crop, bicubic resize)."""
    return torch.stack([to_tensor(image, size) for image in images])


def tensor_to_images(x: torch.Tensor) -> list[Image.Image]:
    return [to_pil(row) for row in x.detach().float().cpu()]
