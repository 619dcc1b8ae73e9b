"""How well images show their prompts: zero-shot attribute accuracy on canonical shapes prompts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from clip.encoder import ClipEncoder, load_encoder
from clip.spec import ClipSpec
from clip.zeroshot import attribute_accuracy
from core.errors import UnclipError
from data.shapes import parse_caption


def prompt_accuracy(images: Sequence[str | Path | Image.Image], prompts: Sequence[str],
                    encoder: ClipEncoder | None = None) -> dict[str, float]:
    """Per-attribute accuracy (and `min`) of CLIP's zero-shot reading of `images` against their prompts.
    Without an encoder, the registry's champion CLIP judges."""
    if len(images) != len(prompts):
        raise UnclipError(f"{len(images)} images for {len(prompts)} prompts")
    attrs = [parse_caption(p) for p in prompts]
    unknown = [p for p, a in zip(prompts, attrs) if a is None]
    if unknown:
        raise UnclipError(f"not a shapes caption, cannot be scored: {unknown[0]!r}")
    if encoder is None:
        from core.registry import download_model

        encoder = load_encoder(ClipSpec.load(download_model("unclip-clip")))
    pictures = [im if isinstance(im, Image.Image) else Image.open(im).convert("RGB") for im in images]
    embeds = encoder.encode_image(pictures)
    accuracy = attribute_accuracy(embeds, attrs, lambda captions: encoder.encode_text(captions).embeds)
    return {**accuracy, "min": min(accuracy.values())}
