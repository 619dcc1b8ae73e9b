"""The built-in procedural dataset: a seeded stream of rendered shapes with exact captions."""

from __future__ import annotations

import hashlib
import json
import random

from data.base import MapDataset
from data.config import DatasetConfig, Split
from data.example import Example
from data.shapes.captions import canonical_caption, paraphrase_caption
from data.shapes.render import render
from data.shapes.spec import ShapeAttributes, sample_attributes
from data.skips import SkipCounter

# Validation draws from seed + VAL_STREAM_OFFSET; seeds are below 2**32, so no train
# (seed, index) of any config is ever a validation one.
VAL_STREAM_OFFSET = 2**32
# Bump when rendering or captions change, so fingerprints (and caches keyed by them) change.
SHAPES_VERSION = 1
# With cfg.paraphrase, the share of train captions that are paraphrased rather than canonical.
PARAPHRASE_PROBABILITY = 0.5


class ShapesDataset(MapDataset):
    def __init__(self, cfg: DatasetConfig, split: Split) -> None:
        self.cfg, self.split = cfg, split
        n_train, n_val = cfg.shapes_split_sizes()
        self._length = n_val if split == "val" else n_train
        self.stream_seed = cfg.seed + (VAL_STREAM_OFFSET if split == "val" else 0)
        self.skips = SkipCounter()  # nothing is ever skipped here; kept for the common interface

    def __len__(self) -> int:
        return self._length

    def attributes(self, index: int) -> ShapeAttributes:
        self._check_index(index)
        return sample_attributes(self.stream_seed, index)

    def caption(self, index: int) -> str:
        """Canonical, or (train split, cfg.paraphrase) possibly a paraphrase fixed per (seed, index)."""
        attrs = self.attributes(index)
        if self.split == "train" and self.cfg.paraphrase:
            rng = random.Random(f"paraphrase/{self.stream_seed}/{index}")
            if rng.random() < PARAPHRASE_PROBABILITY:
                return paraphrase_caption(attrs, rng)
        return canonical_caption(attrs)

    def __getitem__(self, index: int) -> Example:
        attrs = self.attributes(index)
        return Example(
            key=f"shapes/{self.stream_seed}/{index}",
            image=render(attrs, self.cfg.image_size),
            caption=self.caption(index),
        )

    def fingerprint(self) -> str:
        """Hash of the settings that decide this split's pictures and captions."""
        fields = ("num_examples", "image_size", "val_fraction", "val_size", "seed", "paraphrase")
        settings = json.dumps({name: getattr(self.cfg, name) for name in fields}, sort_keys=True)
        text = f"shapes-v{SHAPES_VERSION}/{settings}/{self.split}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]
