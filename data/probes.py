"""Dataset-specific readings of images, for the datasets that offer them (today the shapes benchmark).

The stage evaluators report generic metrics (core/metrics.py) on every dataset; where the held-out
captions belong to a dataset with a probe, they add the probe's figures:
- `zeroshot(image_embeds, captions, embed_text)`: attribute accuracy read by a CLIP, with `min`;
- `pixels(images, captions)`: a CLIP-free reading of images in [-1, 1], with `min`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from data.shapes.probe import ShapesProbe


class Probe(Protocol):
    name: str

    def accepts(self, captions: Sequence[str]) -> bool: ...
    def zeroshot(self, image_embeds: torch.Tensor, captions: Sequence[str],
                 embed_text: Callable[[list[str]], torch.Tensor]) -> dict[str, float]: ...
    def pixels(self, images: torch.Tensor, captions: Sequence[str]) -> dict[str, float]: ...


PROBES: tuple[Probe, ...] = (ShapesProbe(),)


def probe_for(captions: Sequence[str]) -> Probe | None:
    """The probe of the dataset these captions come from, if it has one."""
    return next((p for p in PROBES if p.accepts(captions)), None)


def prefixed(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in scores.items()}
