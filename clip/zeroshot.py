"""Zero-shot evaluation of CLIP embeddings on the built-in shapes data.

Used for the CLIP itself and, with predicted or decoded embeddings, for every later stage.
For each image and attribute the candidates are the image's canonical caption with that
attribute set to each of its values; a hit is the true caption scoring highest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from data.shapes.captions import candidate_captions, canonical_caption
from data.shapes.spec import ATTRIBUTE_VALUES, ATTRIBUTES, ShapeAttributes

EmbedText = Callable[[list[str]], torch.Tensor]


def embed_captions(captions: Sequence[str], embed_text: EmbedText, batch_size: int = 512) -> dict[str, torch.Tensor]:
    unique = sorted(set(captions))
    rows = [embed_text(unique[i:i + batch_size]).float().cpu() for i in range(0, len(unique), batch_size)]
    table = torch.cat(rows)
    return {caption: table[i] for i, caption in enumerate(unique)}


def predict_attributes(
    image_embeds: torch.Tensor, attrs: Sequence[ShapeAttributes], embed_text: EmbedText
) -> list[dict[str, str]]:
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


def attribute_accuracy(
    image_embeds: torch.Tensor, attrs: Sequence[ShapeAttributes], embed_text: EmbedText
) -> dict[str, float]:
    """Per-attribute zero-shot accuracy of L2-normalised image embeddings [N, D]."""
    readings = predict_attributes(image_embeds, attrs, embed_text)
    return {a: sum(r[a] == getattr(x, a) for r, x in zip(readings, attrs)) / len(attrs) for a in ATTRIBUTES}


def retrieval_top1(image_embeds: torch.Tensor, captions: Sequence[str], embed_text: EmbedText) -> float:
    """Image→text top-1 among the given captions; a retrieved identical caption counts as a hit."""
    table = embed_captions(captions, embed_text)
    unique = list(table)
    scores = image_embeds.float().cpu() @ torch.stack([table[c] for c in unique]).T
    best = scores.argmax(dim=1)
    return sum(unique[int(b)] == c for b, c in zip(best, captions)) / len(captions)


def share_interval(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a share measured on n cases: how far an accuracy
    from a few hundred images can be trusted (0.83 on 100 images: 0.74-0.89)."""
    if n < 1:
        raise ValueError(f"a share needs at least one case, got n={n}")
    if not 0 <= share <= 1:
        raise ValueError(f"a share is between 0 and 1, got {share}")
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def format_share(share: float, n: int) -> str:
    """'0.83 (0.74-0.89)': a share with its 95% interval."""
    low, high = share_interval(share, n)
    return f"{share:.2f} ({low:.2f}-{high:.2f})"


def canonical_captions(attrs: Sequence[ShapeAttributes]) -> list[str]:
    return [canonical_caption(x) for x in attrs]
