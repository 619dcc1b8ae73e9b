"""Reading any image file as 8-bit RGB, or saying exactly why it cannot be used."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from data.skips import BadItem

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
HIGH_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


class BadImage(BadItem):
    """An image that cannot be used: corrupt_image, truncated_image, tiny_image, ..."""


def load_rgb(source: str | Path | bytes, min_side: int = 1,
             max_aspect: float | None = None) -> tuple[Image.Image, str | None]:
    """Decode fully and return (RGB image, the mode it was converted from or None; "animated" for
    an animation, of which the first frame is kept).

    Raises BadImage. Decoding is forced here (`load()`), so a truncated file fails now
    rather than later inside a collate function; PIL's LOAD_TRUNCATED_IMAGES stays off.
    An image whose long side is more than `max_aspect` times its short one is skipped
    (extreme_aspect): the square crop every stage takes would keep a sliver of it.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            if min(img.size) < min_side:
                raise BadImage("tiny_image", f"{img.width}x{img.height} < {min_side}")
            if max_aspect is not None and max(img.size) > max_aspect * min(img.size):
                raise BadImage("extreme_aspect", f"{img.width}x{img.height}, more than {max_aspect:g}:1")
            img.load()
            image, mode = to_rgb(_upright(img))
            return image, "animated" if getattr(img, "n_frames", 1) > 1 else mode
    except BadImage:
        raise
    except FileNotFoundError as err:
        raise BadImage("missing_image", str(err)) from None
    except Image.DecompressionBombError as err:
        raise BadImage("oversized_image", str(err)) from None
    except OSError as err:
        reason = "truncated_image" if "truncated" in str(err).lower() else "corrupt_image"
        raise BadImage(reason, str(err)) from None
    except Exception as err:  # decoders raise many types on garbage (SyntaxError, struct.error, ...)
        raise BadImage("corrupt_image", f"{type(err).__name__}: {err}") from None


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (a camera rotation, not an augmentation); ignore broken EXIF."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


def to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Convert any mode to RGB: alpha composited on white, 16-bit and float rescaled to 8-bit."""
    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in HIGH_DEPTH_MODES:
        return _scale_to_8bit(img).convert("RGB"), mode
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), mode
    try:
        return img.convert("RGB"), mode
    except ValueError as err:
        raise BadImage("unsupported_mode", f"{mode}: {err}") from None


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """Map a high-depth single-channel image onto 0..255 by its nominal range, not by clipping.

    16-bit modes use 0..65535. Mode I (32-bit int) is read as 8-bit when it fits 0..255, as
    16-bit when it fits 0..65535, else stretched; F is read as 0..1 when it fits, else stretched.
    """
    values = np.nan_to_num(np.asarray(img, dtype=np.float64))
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode.startswith("I;16") or (img.mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = values / 257.0
    elif img.mode == "I" and low >= 0 and high <= 255:
        scaled = values
    elif img.mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
