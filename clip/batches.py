"""Contrastive batches, optionally with caption-neighbour hard negatives.

In random batches most negatives differ from a caption in several words, so a CLIP learns the
easy attributes (colours) first and the rest slowly. With `hard_fraction` > 0 part of each batch
is filled with groups of examples whose captions overlap most in words with an anchor's (exact
duplicates excluded, they would be false negatives): negatives that differ in one detail.
Works for any captions; nothing here knows the shapes data.
"""

from __future__ import annotations

import re

import torch

from clip.bank import ImageBank


def bag_of_words(captions: list[str]) -> torch.Tensor:
    """Binary word-presence matrix [N, V]."""
    vocab: dict[str, int] = {}
    rows = []
    for caption in captions:
        words = {vocab.setdefault(w, len(vocab)) for w in re.findall(r"[a-z0-9]+", caption.lower())}
        rows.append(sorted(words))
    matrix = torch.zeros(len(captions), max(1, len(vocab)))
    for i, cols in enumerate(rows):
        matrix[i, cols] = 1.0
    return matrix


def neighbours(words: torch.Tensor, anchors: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """For each anchor, k examples with the largest word overlap that are not the same word set."""
    overlap = words[anchors] @ words.T  # [A, N]
    sizes = words.sum(1)
    same = (overlap == sizes[anchors, None]) & (overlap == sizes[None, :])
    score = overlap + 0.5 * torch.rand(overlap.shape, generator=generator)
    score[same] = -1.0
    return score.topk(k, dim=1).indices


def make_batches(bank: ImageBank, tokens: torch.Tensor, batch_size: int, seed: int,
                 hard_fraction: float = 0.0, group: int = 4):
    """`batches(epoch, rank, world)`: a pure function of its arguments, as the training loop needs."""
    words = bag_of_words(bank.captions) if hard_fraction > 0 else None
    n_anchors = int(batch_size * hard_fraction) // group
    n_random = batch_size - n_anchors * group

    def batches(epoch: int, rank: int, world: int):
        g = torch.Generator().manual_seed(seed * 7919 + epoch)
        mine = torch.randperm(len(bank), generator=g)[rank::world]
        for i in range(0, len(mine) - n_random + 1, n_random):
            idx = mine[i:i + n_random]
            if n_anchors:
                extra = neighbours(words, idx[:n_anchors], group, g).reshape(-1)
                idx = torch.cat([idx, extra])
            yield bank.pixels[idx], tokens[idx]

    return batches
