"""What the shapes benchmark can check that other datasets cannot: every caption names five attributes,
and every picture has a pixel-exact rendering.

- zero-shot attribute accuracy: for each image embedding and attribute, the candidates are its caption
  with that attribute set to each of its values; a hit is the true caption scoring highest;
- render match, a CLIP-free check: an image is closest (MSE) to its caption's rendering among the
  renderings with that one attribute changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from data.shapes.captions import candidate_captions, parse_caption
from data.shapes.render import render
from data.shapes.spec import ATTRIBUTE_VALUES, ATTRIBUTES, ShapeAttributes
from data.transforms import to_tensor

EmbedText = Callable[[list[str]], torch.Tensor]


def embed_captions(captions: Sequence[str], embed_text: EmbedText, batch_size: int = 512) -> dict[str, torch.Tensor]:
    unique = sorted(set(captions))
    rows = [embed_text(unique[i:i + batch_size]).float().cpu() for i in range(0, len(unique), batch_size)]
    table = torch.cat(rows)
    return {caption: table[i] for i, caption in enumerate(unique)}


def predict_attributes(image_embeds: torch.Tensor, attrs: Sequence[ShapeAttributes],
                       embed_text: EmbedText) -> list[dict[str, str]]:
    """Per image, each attribute's zero-shot reading: the value whose caption (the image's caption with
    that attribute set to it) scores highest against the L2-normalised embedding [N, D]."""
    if len(image_embeds) != len(attrs):
        raise ValueError(f"{len(image_embeds)} embeddings for {len(attrs)} attribute sets")
    candidates = {a: [candidate_captions(x, a) for x in attrs] for a in ATTRIBUTES}
    table = embed_captions([c for per in candidates.values() for cands in per for c in cands], embed_text)
    image_embeds = image_embeds.float().cpu()
    readings = [{} for _ in attrs]
    for attribute in ATTRIBUTES:
        for reading, emb, cands in zip(readings, image_embeds, candidates[attribute]):
            scores = torch.stack([table[c] for c in cands]) @ emb
            reading[attribute] = ATTRIBUTE_VALUES[attribute][int(scores.argmax())]
    return readings


def attribute_accuracy(image_embeds: torch.Tensor, attrs: Sequence[ShapeAttributes],
                       embed_text: EmbedText) -> dict[str, float]:
    """Per-attribute zero-shot accuracy of L2-normalised image embeddings [N, D]."""
    readings = predict_attributes(image_embeds, attrs, embed_text)
    return {a: sum(r[a] == getattr(x, a) for r, x in zip(readings, attrs)) / len(attrs) for a in ATTRIBUTES}


def render_match(images: torch.Tensor, attrs: Sequence[ShapeAttributes]) -> dict[str, float]:
    """Per attribute, the share of images (in [-1, 1]) nearer to their caption's rendering than to every
    rendering with that attribute changed (no jitter)."""
    size, cache = images.shape[-1], {}

    def rendering(a: ShapeAttributes) -> torch.Tensor:
        if a not in cache:
            cache[a] = to_tensor(render(a, size), size)
        return cache[a]

    hits = dict.fromkeys(ATTRIBUTES, 0)
    for image, a in zip(images, attrs):
        for name in ATTRIBUTES:
            clash = {"color": a.background, "background": a.color}.get(name)
            values = [v for v in ATTRIBUTE_VALUES[name] if v != clash]
            errors = [float((rendering(a.replace(**{name: v})) - image).pow(2).mean()) for v in values]
            hits[name] += values[errors.index(min(errors))] == getattr(a, name)
    return {k: v / len(attrs) for k, v in hits.items()}


def _with_min(scores: dict[str, float]) -> dict[str, float]:
    return {**scores, "min": min(scores.values())}


class ShapesProbe:
    """The shapes readings behind the interface of data.probes."""

    name = "shapes"

    def accepts(self, captions: Sequence[str]) -> bool:
        return bool(captions) and all(parse_caption(c) is not None for c in captions)

    def zeroshot(self, image_embeds: torch.Tensor, captions: Sequence[str], embed_text: EmbedText) -> dict[str, float]:
        return _with_min(attribute_accuracy(image_embeds, [parse_caption(c) for c in captions], embed_text))

    def pixels(self, images: torch.Tensor, captions: Sequence[str]) -> dict[str, float]:
        return _with_min(render_match(images, [parse_caption(c) for c in captions]))
