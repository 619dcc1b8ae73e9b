"""What a shapes image may contain, and drawing a random one from (seed, index)."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
SIZES = ("small", "large")
POSITIONS = ("center", "top", "bottom", "left", "right")
ATTRIBUTES = ("color", "shape", "size", "position", "background")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": SIZES,
    "position": POSITIONS,
    "background": tuple(COLORS),
}

# The object's bounding-box side as a fraction of the canvas side, before jitter.
SIZE_FRACTIONS = {"small": 0.25, "large": 0.45}
SIZE_JITTER = 0.10  # relative: the side is multiplied by a factor in [0.9, 1.1]
# The object's bounding-box centre (x, y from the top-left) as fractions of the canvas.
CENTRES = {
    "center": (0.5, 0.5),
    "top": (0.5, 0.3),
    "bottom": (0.5, 0.7),
    "left": (0.3, 0.5),
    "right": (0.7, 0.5),
}
POSITION_JITTER = 0.03  # absolute, in canvas fractions, on each axis


@dataclass(frozen=True)
class ShapeAttributes:
    color: str
    shape: str
    size: str
    position: str
    background: str
    scale: float = 1.0  # size jitter factor, in [1 - SIZE_JITTER, 1 + SIZE_JITTER]
    dx: float = 0.0  # centre jitter, canvas fractions, in [-POSITION_JITTER, POSITION_JITTER]
    dy: float = 0.0

    def __post_init__(self) -> None:
        for name in ATTRIBUTES:
            if getattr(self, name) not in ATTRIBUTE_VALUES[name]:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {ATTRIBUTE_VALUES[name]}")

    @property
    def extent(self) -> float:
        """Bounding-box side as a fraction of the canvas side."""
        return SIZE_FRACTIONS[self.size] * self.scale

    @property
    def centre(self) -> tuple[float, float]:
        """Bounding-box centre as canvas fractions, kept so that the box stays inside the canvas."""
        half = self.extent / 2
        x, y = CENTRES[self.position]
        return min(max(x + self.dx, half), 1 - half), min(max(y + self.dy, half), 1 - half)

    def box(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) as canvas fractions."""
        (x, y), half = self.centre, self.extent / 2
        return x - half, y - half, x + half, y + half

    def replace(self, **changes: object) -> ShapeAttributes:
        return dataclasses.replace(self, **changes)


def sample_attributes(seed: int, index: int) -> ShapeAttributes:
    """The attributes of example `index` of the stream `seed`; the same on every platform."""
    rng = random.Random(f"shapes/{seed}/{index}")  # str seeds are hashed with SHA-512: stable
    color = rng.choice(ATTRIBUTE_VALUES["color"])
    return ShapeAttributes(
        color=color,
        shape=rng.choice(SHAPES),
        size=rng.choice(SIZES),
        position=rng.choice(POSITIONS),
        background=rng.choice([c for c in COLORS if c != color]),
        scale=rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER),
        dx=rng.uniform(-POSITION_JITTER, POSITION_JITTER),
        dy=rng.uniform(-POSITION_JITTER, POSITION_JITTER),
    )
