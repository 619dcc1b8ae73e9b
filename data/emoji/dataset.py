"""The built-in emoji dataset: OpenMoji artworks captioned with their CLDR names."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

from data.base import MapDataset
from data.config import DatasetConfig, Split
from data.emoji.build import EMOJI_FORMAT, ensure_images, open_svg_set
from data.emoji.names import variant_group
from data.example import Example
from data.images import load_rgb
from data.skips import BadItem, SkipCounter
from data.splits import grouped_split, split_of


class EmojiDataset(MapDataset):
    """Key = the emoji's code points without FE0F (`1F9DA-1F3FF-200D-2642`). Pictures come from
    the data cache, built on first use (see data/emoji/build.py). Val holds some skin-tone and
    gender variants of figures whose other variants are in train, so captions can compose."""

    def __init__(self, cfg: DatasetConfig, split: Split) -> None:
        self.cfg, self.split = cfg, split
        self.svgs = open_svg_set(cfg.existing_path() if cfg.path else None)
        self.folder, self.index = ensure_images(self.svgs, cfg.image_size)
        splits = split_assignment([item["key"] for item in self.index["items"]], cfg.val_fraction)
        self._items = [item for item in self.index["items"] if splits[item["key"]] == split]
        self.skips = SkipCounter()
        for reason, entries in sorted(self.index["skipped"].items()):
            for key, detail in sorted(entries.items()):  # each in the split its key hashes to
                if split_of(key, cfg.val_fraction) == split:
                    self.skips.add(reason, key, detail)

    def __len__(self) -> int:
        return len(self._items)

    def key(self, index: int) -> str:
        self._check_index(index)
        return self._items[index]["key"]

    def caption(self, index: int) -> str:
        self._check_index(index)
        return self._items[index]["caption"]

    def __getitem__(self, index: int) -> Example | None:
        self._check_index(index)
        item = self._items[index]
        try:
            image, _ = load_rgb(self.folder / item["file"])  # stored opaque RGBA: converting loses nothing
        except BadItem as bad:  # the cache was tampered with after it was built
            self.skips.add(bad.reason, item["key"], bad.detail)
            return None
        return Example(key=item["key"], image=image, caption=item["caption"])

    def fingerprint(self) -> str:
        """Hash of the SVGs and names (the cache's source digest), the size and the split."""
        settings = json.dumps({"image_size": self.cfg.image_size, "val_fraction": self.cfg.val_fraction})
        text = f"emoji-v{EMOJI_FORMAT}/{self.svgs.digest}/{settings}/{self.split}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_assignment(keys: list[str], val_fraction: float) -> dict[str, Split]:
    """key -> split, the variants of one figure held out together by `grouped_split`."""
    groups: defaultdict[str, list[str]] = defaultdict(list)
    for key in keys:
        groups[variant_group(key)].append(key)
    return grouped_split(groups, val_fraction)
