"""Opening a dataset split from its config."""

from __future__ import annotations

from data.config import DatasetConfig, Split
from data.emoji import EmojiDataset
from data.folder import FolderDataset
from data.shapes.dataset import ShapesDataset
from data.webdataset import TarShardDataset

ImageCaptionDataset = ShapesDataset | EmojiDataset | FolderDataset | TarShardDataset
SPLITS = ("train", "val")


def open_dataset(cfg: DatasetConfig, split: Split) -> ImageCaptionDataset:
    """One split of the configured source. Every source iterates valid Examples, counts what it
    skips in `.skips`, and has `.fingerprint()` and `.iter_shard(rank, world)`; shapes, emoji
    and folder also have `len()` and `[i]` (None for a skipped item)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.source == "shapes":
        return ShapesDataset(cfg, split)
    if cfg.source == "emoji":
        return EmojiDataset(cfg, split)
    if cfg.source == "folder":
        return FolderDataset(cfg, split)
    return TarShardDataset(cfg, split)
