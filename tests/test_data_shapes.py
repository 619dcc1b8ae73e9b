"""The shapes spec measured from pixels: palette, geometry, resolution independence, captions."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from data.shapes import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    CENTRES,
    COLORS,
    POSITION_JITTER,
    POSITIONS,
    SHAPES,
    SIZE_FRACTIONS,
    SIZE_JITTER,
    SIZES,
    ShapeAttributes,
    candidate_captions,
    canonical_caption,
    caption_with,
    paraphrase_caption,
    parse_caption,
    render,
    sample_attributes,
)


def object_mask(image: Image.Image, attrs: ShapeAttributes) -> np.ndarray:
    """Pixels more than half covered by the object (by distance along the object-background line)."""
    pixels = np.asarray(image, dtype=np.float64)
    bg, fg = np.array(COLORS[attrs.background], float), np.array(COLORS[attrs.color], float)
    coverage = ((pixels - bg) @ (fg - bg)) / ((fg - bg) @ (fg - bg))
    return coverage > 0.5


def measured_box(image: Image.Image, attrs: ShapeAttributes) -> tuple[float, float, float, float]:
    """(width, height, centre x, centre y) of the object as canvas fractions."""
    ys, xs = np.nonzero(object_mask(image, attrs))
    n = image.width
    return (
        (xs.max() - xs.min() + 1) / n,
        (ys.max() - ys.min() + 1) / n,
        (xs.max() + xs.min() + 1) / 2 / n,
        (ys.max() + ys.min() + 1) / 2 / n,
    )


def test_spec_constants():
    assert COLORS == {
        "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
        "purple": (140, 60, 180), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20),
    }  # fmt: skip
    assert SHAPES == ("circle", "square", "triangle", "star", "cross")
    assert SIZES == ("small", "large") and POSITIONS == ("center", "top", "bottom", "left", "right")
    assert ATTRIBUTES == ("color", "shape", "size", "position", "background")
    assert ATTRIBUTE_VALUES["color"] == ATTRIBUTE_VALUES["background"] == tuple(COLORS)


def test_sampling_is_deterministic_and_varied():
    assert sample_attributes(3, 17) == sample_attributes(3, 17)
    many = [sample_attributes(0, i) for i in range(400)]
    assert len(set(many)) == 400
    for name in ATTRIBUTES:
        assert {getattr(a, name) for a in many} == set(ATTRIBUTE_VALUES[name])
    assert all(a.background != a.color for a in many)
    assert sample_attributes(1, 17) != sample_attributes(3, 17)


def test_render_is_deterministic():
    attrs = sample_attributes(5, 9)
    assert render(attrs, 64).tobytes() == render(attrs, 64).tobytes()
    image = render(attrs, 40)
    assert image.mode == "RGB" and image.size == (40, 40)


@pytest.mark.parametrize("index", range(8))
def test_same_picture_at_two_resolutions(index):
    attrs = sample_attributes(11, index)
    small = np.asarray(render(attrs, 64), dtype=float)
    large = np.asarray(render(attrs, 256).resize((64, 64), Image.Resampling.BOX), dtype=float)
    differs = np.abs(small - large).max(axis=-1) > 8  # only edge pixels may differ, by sub-pixel rounding
    assert np.abs(small - large).mean() < 1.0 and differs.mean() < 0.02


def test_large_render_is_fast_and_consistent():
    attrs = sample_attributes(0, 2)
    big = render(attrs, 1024)
    assert big.size == (1024, 1024)
    small = np.asarray(render(attrs, 64), dtype=float)
    assert np.abs(np.asarray(big.resize((64, 64), Image.Resampling.BOX), dtype=float) - small).mean() < 1.0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", SIZES)
def test_palette_colours_are_exact(shape, size):
    for position, color, background in (
        ("center", "red", "blue"),
        ("left", "white", "black"),
        ("top", "orange", "yellow"),
    ):
        attrs = ShapeAttributes(color, shape, size, position, background, scale=0.9, dx=0.02, dy=-0.01)
        pixels = np.asarray(render(attrs, 64))
        cx, cy = attrs.centre
        assert tuple(pixels[int(cy * 64), int(cx * 64)]) == COLORS[color]
        for y, x in ((0, 0), (0, 63), (63, 0), (63, 63)):
            assert tuple(pixels[y, x]) == COLORS[background]


@pytest.mark.parametrize("index", range(40))
def test_geometry_matches_spec(index):
    attrs = sample_attributes(2, index)
    width, height, x, y = measured_box(render(attrs, 256), attrs)
    side = max(width, height)
    nominal = SIZE_FRACTIONS[attrs.size]
    tolerance = (3 if attrs.shape == "star" else 2) / 256  # a star's thin tips are under half covered
    assert nominal * (1 - SIZE_JITTER) - tolerance <= side <= nominal * (1 + SIZE_JITTER) + tolerance
    assert abs(side - attrs.extent) <= tolerance
    if attrs.shape != "star":  # a star is wider than tall; its box is centred horizontally only
        assert abs(width - height) <= tolerance
    cx, cy = CENTRES[attrs.position]
    assert abs(x - cx) <= POSITION_JITTER + tolerance
    star_offset = (attrs.extent - height) / 2 if attrs.shape == "star" else 0
    assert abs(y - cy) <= POSITION_JITTER + tolerance + star_offset


def test_triangle_points_up_and_star_has_one_point_up():
    for shape in ("triangle", "star"):
        attrs = ShapeAttributes("black", shape, "large", "center", "white")
        mask = object_mask(render(attrs, 256), attrs)
        rows = np.nonzero(mask.any(axis=1))[0]
        top_row, bottom_row = mask[rows[0]], mask[rows[-1]]
        assert top_row.sum() < 8  # a single apex at the top
        if shape == "triangle":
            assert bottom_row.sum() > 100  # a flat base at the bottom
        else:
            assert np.nonzero(top_row)[0].mean() == pytest.approx(128, abs=2)


def test_positions_are_not_mirrored():
    for position, (cx, cy) in CENTRES.items():
        attrs = ShapeAttributes("red", "square", "small", position, "white")
        _, _, x, y = measured_box(render(attrs, 128), attrs)
        assert (x, y) == (pytest.approx(cx, abs=0.02), pytest.approx(cy, abs=0.02))


def test_canonical_caption_format():
    attrs = ShapeAttributes("red", "circle", "large", "center", "blue")
    assert canonical_caption(attrs) == "a large red circle in the center on a blue background"
    colors, where = "|".join(COLORS), "in the center|at the top|at the bottom|on the left|on the right"
    pattern = re.compile(
        rf"a (small|large) ({colors}) ({'|'.join(SHAPES)}) ({where}) on a ({colors}) background"
    )
    for i in range(200):
        a = sample_attributes(0, i)
        match = pattern.fullmatch(canonical_caption(a))
        assert match and match.groups()[:3] == (a.size, a.color, a.shape) and match[5] == a.background


def test_parse_caption_inverts_canonical_and_paraphrases():
    import random

    rng = random.Random(0)
    for i in range(300):
        attrs = sample_attributes(4, i)
        plain = attrs.replace(scale=1.0, dx=0.0, dy=0.0)
        assert parse_caption(canonical_caption(attrs)) == plain
        paraphrase = paraphrase_caption(attrs, rng)
        assert parse_caption(paraphrase) == plain, paraphrase
        assert parse_caption(paraphrase.upper() + ".") == plain
    assert parse_caption("a red circle, large, in the center, on a blue background").size == "large"
    assert parse_caption("a large red circle centered on an orange backdrop").background == "orange"
    for text in (
        "",
        "a dog",
        "a large red circle in the center",
        "a huge red circle in the center on a blue background",
        "a large red circle in the center on a blue background with a dog",
    ):
        assert parse_caption(text) is None


def test_caption_with_and_candidates():
    attrs = ShapeAttributes("red", "circle", "large", "center", "blue")
    assert caption_with(attrs, color="green") == "a large green circle in the center on a blue background"
    assert (
        caption_with(attrs, shape="star", position="left")
        == "a large red star on the left on a blue background"
    )
    with pytest.raises(ValueError):
        caption_with(attrs, color="pink")
    for name in ATTRIBUTES:
        candidates = candidate_captions(attrs, name)
        assert len(candidates) == len(set(candidates)) == len(ATTRIBUTE_VALUES[name])
        assert candidates.count(canonical_caption(attrs)) == 1
        assert [getattr(parse_caption(c), name) for c in candidates] == list(ATTRIBUTE_VALUES[name])


def test_invalid_attributes_are_rejected():
    with pytest.raises(ValueError):
        ShapeAttributes("red", "hexagon", "large", "center", "blue")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 10**9))
def test_any_example_renders_inside_the_canvas(seed, index):
    attrs = sample_attributes(seed, index)
    left, top, right, bottom = attrs.box()
    assert 0 < left < right < 1 and 0 < top < bottom < 1
    assert attrs.color != attrs.background
    pixels = np.asarray(render(attrs, 128))
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    assert (border == COLORS[attrs.background]).all()
