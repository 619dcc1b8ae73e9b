"""Best of n decodes: n candidates per image embedding, and the one whose CLIP image embedding comes
back closest (cosine) to the embedding it was decoded from is kept.

The decoder's counterpart of the prior's best of 2: the decoder is meant to invert CLIP's image
encoder, so the frozen CLIP itself checks each candidate's round trip. Candidate 0 is `decode`'s own
sample for the seed (`core.candidates`), so best of 1 is the plain decode and every candidate is
independent of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from core.candidates import candidate_seeds, dot_scores, pick_best
from core.errors import ConfigError
from decoder.model import Decoder
from decoder.sample import Caption, decode

Encode = Callable[[Tensor], Tensor]  # images [N, 3, S, S] in [-1, 1] -> CLIP image embeddings [N, D]


@dataclass(frozen=True)
class BestOf:
    """The kept images [B, 3, S, S], all candidates [B, n, 3, S, S] (candidate 0 = the plain decode),
    their cosines with the conditioning embedding [B, n], the kept candidate's index [B], and the
    candidates' CLIP image embeddings [B, n, D] (None for best of 1, which encodes nothing)."""

    images: Tensor
    candidates: Tensor
    scores: Tensor
    index: Tensor
    embeds: Tensor | None = None


def repeat_caption(text: Caption | None, n: int) -> Caption | None:
    if text is None or n == 1:
        return text
    return Caption(text.embeds.repeat_interleave(n, 0), text.tokens.repeat_interleave(n, 0),
                   text.mask.repeat_interleave(n, 0))


@torch.no_grad()
def decode_best_of(decoder: Decoder, encode: Encode, image_embeds: Tensor, text: Caption | None,
                   seeds: Sequence[int], best_of: int, **decode_kw) -> BestOf:
    """`best_of` decodes per embedding (`decode`'s settings in `decode_kw`), ranked by the cosine
    between `encode(candidate)` and the embedding. Starting points (`x_T`) and caption blends are
    not supported: their decodes have no seed to vary."""
    if best_of < 1:
        raise ConfigError(f"best_of must be at least 1, got {best_of}")
    if decode_kw.get("x_T") is not None or decode_kw.get("blend") is not None:
        raise ConfigError("best_of decodes start from seeded noise; it cannot be combined with x_T or a blend")
    seeds = [int(s) for s in seeds]
    if len(seeds) != image_embeds.shape[0]:
        raise ConfigError(f"{image_embeds.shape[0]} image embeddings but {len(seeds)} seeds")
    n = best_of
    images = decode(decoder, image_embeds.repeat_interleave(n, 0), repeat_caption(text, n),
                    candidate_seeds(seeds, n), **decode_kw)
    candidates = images.view(len(seeds), n, *images.shape[1:])
    if n == 1:
        return BestOf(images, candidates, torch.ones(len(seeds), 1), torch.zeros(len(seeds), dtype=torch.long))
    return rank(encode, candidates, image_embeds)


def rank(encode: Encode, candidates: Tensor, image_embeds: Tensor) -> BestOf:
    """Keep, of each row's candidate images [B, n, 3, S, S], the one whose `encode` embedding has the
    largest cosine with that row's embedding [B, D]."""
    b, n = candidates.shape[:2]
    embeds = encode(candidates.flatten(0, 1)).float().view(b, n, -1)
    scores = dot_scores(F.normalize(embeds, dim=-1), F.normalize(image_embeds.float(), dim=-1)).cpu()
    chosen, index = pick_best(candidates, scores)
    return BestOf(chosen, candidates, scores, index, embeds)
