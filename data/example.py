"""One image–caption pair, the unit every source yields."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Example:
    key: str  # stable identity: relative path, tar key, or shapes stream/index
    image: Image.Image  # always mode "RGB"
    caption: str
