"""Held-out figures of a CLIP, on any dataset: retrieval in both directions, plus a dataset's probe.

The same figures score a CLIP trained here (clip/train.py) and a frozen pretrained one the cascade is
handed (`evaluate_encoder`), so both pass the same registry gate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from core.metrics import retrieval
from data.probes import prefixed, probe_for

EmbedText = Callable[[list[str]], torch.Tensor]


def clip_metrics(image_embeds: torch.Tensor, text_embeds: torch.Tensor, captions: Sequence[str],
                 embed_text: EmbedText) -> dict[str, float]:
    """Retrieval top-1/top-5 both ways (`retrieval_top1`: their mean, the gate); where the captions
    come from a dataset with a probe, its zero-shot figures as `zeroshot_*`."""
    metrics = retrieval(image_embeds, text_embeds, captions)
    probe = probe_for(captions)
    if probe is not None:
        unit = torch.nn.functional.normalize(image_embeds.float(), dim=-1)
        metrics.update(prefixed("zeroshot_", probe.zeroshot(unit, captions, embed_text)))
    return metrics


def evaluate_encoder(encoder, images: torch.Tensor, captions: Sequence[str], batch_size: int = 256) -> dict[str, float]:
    """`clip_metrics` of a frozen ClipEncoder on held-out uint8 images [N, 3, S, S] and their captions."""
    pixels = images.float() / 127.5 - 1
    image_embeds = encoder.encode_pixels(pixels, batch_size=batch_size).cpu()
    text_embeds = encoder.encode_text(list(captions), batch_size=batch_size).embeds.cpu()

    def embed_text(texts: list[str]) -> torch.Tensor:
        return encoder.encode_text(texts, batch_size=batch_size).embeds.cpu()

    return clip_metrics(image_embeds, text_embeds, captions, embed_text)
