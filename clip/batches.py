"""Contrastive batches from a shuffle buffer, optionally with caption-neighbour hard negatives.

In random batches most negatives differ from a caption in several words, so a CLIP learns the
easy attributes (colours) first and the rest slowly. With `hard_fraction` > 0 part of each batch
is filled with groups of examples whose captions share the most tokens with an anchor's (exact
duplicates excluded, they would be false negatives): negatives that differ in one detail. The
neighbours come from the same shuffle buffer (data/shards.py), so memory stays that of the buffer.
Works for any captions; nothing here knows the shapes data.
"""

from __future__ import annotations

import torch

# open_clip's tokenizer: padding 0, start-of-text 49406, end-of-text 49407 carry no words.
SPECIAL_TOKENS = (0, 49406, 49407)


def bag_of_tokens(ids: torch.Tensor) -> torch.Tensor:
    """Binary token-presence matrix [N, V] over the tokens these captions use (special tokens left out)."""
    vocab, inverse = torch.unique(ids, return_inverse=True)
    matrix = torch.zeros(len(ids), len(vocab))
    matrix.scatter_(1, inverse, 1.0)
    keep = ~torch.isin(vocab, torch.tensor(SPECIAL_TOKENS))
    return matrix[:, keep]


def neighbours(words: torch.Tensor, anchors: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """For each anchor, k examples with the largest word overlap that are not the same word set."""
    overlap = words[anchors] @ words.T  # [A, N]
    sizes = words.sum(1)
    same = (overlap == sizes[anchors, None]) & (overlap == sizes[None, :])
    score = overlap + 0.5 * torch.rand(overlap.shape, generator=generator)
    score[same] = -1.0
    return score.topk(k, dim=1).indices


def contrastive_batches(batch_size: int, hard_fraction: float = 0.0, group: int = 4):
    """`prepare(rows, generator)` for ShardSet.batches: batches of (images, text_ids) from a shuffled
    buffer of rows; a `hard_fraction` of each batch is anchors' caption neighbours from the buffer."""
    n_anchors = int(batch_size * hard_fraction) // group
    n_random = batch_size - n_anchors * group

    def prepare(rows: dict[str, torch.Tensor], g: torch.Generator):
        images, ids = rows["images"], rows["text_ids"]
        words = bag_of_tokens(ids) if n_anchors else None
        for i in range(0, len(ids) - n_random + 1, n_random):
            idx = torch.arange(i, i + n_random)
            if n_anchors:
                idx = torch.cat([idx, neighbours(words, idx[:n_anchors], group, g).reshape(-1)])
            yield images[idx], ids[idx]
    return prepare
