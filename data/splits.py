"""Deterministic train/val assignment and disjoint per-process / per-worker shares."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch.utils.data

from data.config import Split


def split_of(key: str, val_fraction: float) -> Split:
    """val when sha1(key), read as a fraction of 2**64, is below val_fraction.

    It depends on the key alone, so adding files never moves an existing one across splits.
    """
    return "val" if _hash_fraction(key) < val_fraction else "train"


def _hash_fraction(text: str) -> float:
    digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def grouped_split(groups: Mapping[str, Sequence[str]], val_fraction: float) -> dict[str, Split]:
    """key -> split, holding out some variants of each group but never a whole group.

    A group of n keys (e.g. one figure in several skin tones) sends floor(n·val_fraction + u)
    of them to val, u a hash of the group, at most n - 1: the keys with the lowest sha1, so
    every held-out key has a sibling in train. Single keys go by `split_of`.
    """
    splits: dict[str, Split] = {}
    for group, keys in groups.items():
        if len(keys) == 1:
            splits[keys[0]] = split_of(keys[0], val_fraction)
            continue
        n_val = min(int(len(keys) * val_fraction + _hash_fraction(f"group/{group}")), len(keys) - 1)
        ranked = sorted(keys, key=lambda key: (_hash_fraction(key), key))
        splits.update({key: "val" if rank < n_val else "train" for rank, key in enumerate(ranked)})
    return splits


def reader_slot(rank: int, world: int) -> tuple[int, int]:
    """(slot, slots): this process's DataLoader worker among all workers of all processes."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world * workers


@dataclass(frozen=True)
class StreamShare:
    """Read files[file_start::file_step], and of their items (counted in order) items[item_start::item_step]."""

    file_start: int
    file_step: int
    item_start: int
    item_step: int


def stream_share(n_files: int, rank: int, world: int) -> StreamShare:
    """Split whole files between readers when there are enough of them, else items."""
    slot, slots = reader_slot(rank, world)
    if n_files >= slots:
        return StreamShare(slot, slots, 0, 1)
    workers = slots // world
    if n_files >= world:
        return StreamShare(rank, world, slot - rank * workers, workers)
    return StreamShare(0, 1, slot, slots)
