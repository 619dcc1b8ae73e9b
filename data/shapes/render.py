"""Drawing ShapeAttributes as an antialiased RGB picture at any resolution."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

from data.shapes.spec import COLORS, ShapeAttributes

STAR_INNER_RATIO = 0.45  # inner/outer radius; fatter than a regular star, clearer at 64 px
CROSS_ARM_FRACTION = 1 / 3  # arm thickness as a fraction of the bounding box side


def _fit_unit_box(points: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Scale and centre a polygon so its bounding box is centred in [0,1]² with longer side 1."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    scale = 1 / max(max(xs) - min(xs), max(ys) - min(ys))
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    return tuple((0.5 + (x - cx) * scale, 0.5 + (y - cy) * scale) for x, y in points)


def _star() -> tuple[tuple[float, float], ...]:
    points = []
    for k in range(10):  # angle -90° is straight up, y grows downwards
        radius = 1.0 if k % 2 == 0 else STAR_INNER_RATIO
        angle = math.radians(-90 + 36 * k)
        points.append((radius * math.cos(angle), radius * math.sin(angle)))
    return _fit_unit_box(points)


# Outlines of the polygon shapes in the unit bounding box.
OUTLINES = {"triangle": ((0.5, 0.0), (1.0, 1.0), (0.0, 1.0)), "star": _star()}


def supersampling(size: int) -> int:
    """Drawing scale: 4x, or 2x above 512 px where 4x would be slow and is not needed."""
    return 4 if size <= 512 else 2


def render(attrs: ShapeAttributes, size: int) -> Image.Image:
    """A size×size RGB image; the geometry is in canvas fractions, so every size shows the same picture.

    Drawn at a higher resolution, then box-filtered down: each pixel gets the exact area
    average, so flat regions keep the exact palette colours (no ringing).
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    factor = supersampling(size)
    side = size * factor
    canvas = Image.new("RGB", (side, side), COLORS[attrs.background])
    _draw_shape(ImageDraw.Draw(canvas), attrs, side)
    return canvas.resize((size, size), Image.Resampling.BOX)


def _draw_shape(draw: ImageDraw.ImageDraw, attrs: ShapeAttributes, side: int) -> None:
    fill = COLORS[attrs.color]
    left, top, right, bottom = (v * side for v in attrs.box())
    if attrs.shape == "circle":
        draw.ellipse(_pixel_box(left, top, right, bottom), fill=fill)
    elif attrs.shape == "square":
        draw.rectangle(_pixel_box(left, top, right, bottom), fill=fill)
    elif attrs.shape == "cross":
        half_arm = (right - left) * CROSS_ARM_FRACTION / 2
        cx, cy = (left + right) / 2, (top + bottom) / 2
        draw.rectangle(_pixel_box(left, cy - half_arm, right, cy + half_arm), fill=fill)
        draw.rectangle(_pixel_box(cx - half_arm, top, cx + half_arm, bottom), fill=fill)
    else:
        width, height = right - left, bottom - top
        # PIL puts vertex coordinates on pixel centres; shift by half a pixel to cover [left, right).
        outline = [(left + u * width - 0.5, top + v * height - 0.5) for u, v in OUTLINES[attrs.shape]]
        draw.polygon(outline, fill=fill)


def _pixel_box(left: float, top: float, right: float, bottom: float) -> tuple[int, int, int, int]:
    """The inclusive pixel box PIL fills for the continuous box [left, right) × [top, bottom)."""
    return round(left), round(top), round(right) - 1, round(bottom) - 1
