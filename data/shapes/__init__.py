"""The shapes spec: palette, shapes, sizes, positions, rendering and captions."""

from data.shapes.captions import (
    WHERE,
    candidate_captions,
    canonical_caption,
    caption_with,
    paraphrase_caption,
    parse_caption,
)
from data.shapes.dataset import ShapesDataset
from data.shapes.render import render
from data.shapes.spec import (
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
    sample_attributes,
)

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_VALUES",
    "CENTRES",
    "COLORS",
    "POSITIONS",
    "POSITION_JITTER",
    "SHAPES",
    "SIZES",
    "SIZE_FRACTIONS",
    "SIZE_JITTER",
    "WHERE",
    "ShapeAttributes",
    "ShapesDataset",
    "candidate_captions",
    "canonical_caption",
    "caption_with",
    "paraphrase_caption",
    "parse_caption",
    "render",
    "sample_attributes",
]
