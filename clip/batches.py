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


DENSE_LIMIT = 1 << 24  # entries of a bag-of-tokens matrix kept dense (64 MB); larger ones stay sparse


def bag_of_tokens(ids: torch.Tensor) -> torch.Tensor:
    """Binary token-presence matrix [N, V] over the tokens these captions use (special tokens left out):
    dense while small, else sparse (a few entries per caption: the memory of the captions, not N × V)."""
    rows = torch.arange(len(ids)).repeat_interleave(ids.shape[1])
    tokens = ids.reshape(-1).long()
    keep = ~torch.isin(tokens, torch.tensor(SPECIAL_TOKENS))
    vocab, compact = torch.unique(tokens[keep], return_inverse=True)
    if len(ids) * len(vocab) <= DENSE_LIMIT:
        return torch.zeros(len(ids), len(vocab)).index_put_((rows[keep], compact), torch.ones(1))
    pairs = torch.unique(torch.stack([rows[keep], compact]), dim=1)
    with torch.sparse.check_sparse_tensor_invariants(True):
        return torch.sparse_coo_tensor(pairs, torch.ones(pairs.shape[1]), (len(ids), len(vocab))).coalesce()


def neighbours(words: torch.Tensor, anchors: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """For each anchor, k examples with the largest word overlap that are not the same word set."""
    if words.is_sparse:
        overlap = torch.sparse.mm(words, words.index_select(0, anchors).to_dense().T).T  # [A, N]
        sizes = torch.sparse.sum(words, dim=1).to_dense()
    else:
        overlap, sizes = words[anchors] @ words.T, words.sum(1)
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
