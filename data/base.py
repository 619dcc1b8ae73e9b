"""What map-style sources share: iteration over valid examples and disjoint shards."""

from __future__ import annotations

from collections.abc import Iterator

import torch.utils.data

from data.example import Example
from data.skips import SkipCounter
from data.splits import reader_slot


class MapDataset(torch.utils.data.Dataset):
    """A sized source; `__getitem__` returns None for a skipped item (counted in `skips`)."""

    skips: SkipCounter

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Example | None:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples")

    def __iter__(self) -> Iterator[Example]:
        return self.iter_shard(0, 1)

    def iter_shard(self, rank: int, world: int) -> Iterator[Example]:
        """Valid examples at indices ≡ this reader's slot, across ranks and DataLoader workers."""
        slot, slots = reader_slot(rank, world)
        for index in range(slot, len(self), slots):
            example = self[index]
            if example is not None:
                yield example
