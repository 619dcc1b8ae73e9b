"""Best-of-n sampling, shared by the prior and the decoder: n candidates per sample, each from its own
seed, and the one that scores highest against a target embedding is kept.

Candidate k of the sample with seed s draws from its own stream of s (`core.seeds.stream_seed`;
k = 0 is the seed itself, so best of 1 is the plain sample), so neither the batch size nor the
chunking changes a candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from core.seeds import stream_seed


def candidate_seeds(seeds: Sequence[int], count: int) -> list[int]:
    """Seeds of the `count` candidates of every sample, sample-major."""
    return [int(s) if k == 0 else stream_seed(s, f"candidate/{k}") for s in seeds for k in range(count)]


def pick_best(candidates: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample, the candidate [B, n, ...] with the largest score [B, n]; returns the chosen [B, ...]
    and their indices [B]."""
    best = scores.argmax(dim=1)
    return candidates[torch.arange(len(best), device=candidates.device), best.to(candidates.device)], best


def dot_scores(candidates: Tensor, targets: Tensor) -> Tensor:
    """Dot products [B, n] of candidate embeddings [B, n, D] with one target embedding [B, D] each."""
    return torch.einsum("bnd,bd->bn", candidates.float(), targets.float().to(candidates.device))
