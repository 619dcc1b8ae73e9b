"""The one config that says which image–caption data to read and how to split it."""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from core.config import Config
from core.errors import ConfigError

Source = Literal["shapes", "emoji", "folder", "webdataset"]
SOURCES: tuple[str, ...] = Source.__args__
# Built-in sources: they need no path (emoji takes one to use other SVGs than the wheel's).
BUILT_IN: tuple[Source, ...] = ("shapes", "emoji")
Split = Literal["train", "val"]


class DatasetConfig(Config):
    """Fields marked 'shapes only' are ignored by the other sources (and `path` by shapes), so a
    preset can switch source with one override. The path is checked when a dataset is opened,
    not here: a config saved beside weights must load on a machine without the data."""

    source: Source = "shapes"
    # folder: a directory of images; webdataset: a directory of .tar shards, one shard, a glob or
    # webdataset's brace notation (/shards/{0000..0999}.tar); emoji (optional): a folder of
    # OpenMoji-style SVGs named by code points, instead of the wheel's.
    path: str | None = None
    # shapes only: total examples over both splits.
    num_examples: int = Field(20000, ge=2)
    # shapes and emoji: the render resolution.
    image_size: int = Field(64, ge=16, le=4096)
    # Share of examples in val; folder/webdataset decide per item from sha1(key), emoji per group of
    # skin-tone and gender variants (never all of a group), see splits.py.
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    # shapes only: exact number of validation examples (overrides val_fraction).
    val_size: int | None = Field(None, ge=1)
    # shapes only: the picture stream (val uses its own stream derived from it).
    seed: int = Field(0, ge=0, lt=2**32)
    # folder/webdataset: images with a smaller side are skipped (tiny_image).
    min_side: int = Field(8, ge=1)
    # folder/webdataset: images whose long side is more than this many times the short one are skipped
    # (extreme_aspect): the centre square every stage crops would keep a sliver of a 6000x8 strip.
    max_aspect: float = Field(10.0, ge=1)
    # shapes only: meaning-preserving caption paraphrases in the train split.
    paraphrase: bool = False

    @model_validator(mode="after")
    def _check_source(self) -> DatasetConfig:
        if self.source not in BUILT_IN and not self.path:
            raise ValueError(f"source {self.source!r} needs a path")
        if self.source == "shapes" and self.val_size is not None and self.val_size >= self.num_examples:
            raise ValueError(f"val_size {self.val_size} leaves no training examples of {self.num_examples}")
        return self

    def shapes_split_sizes(self) -> tuple[int, int]:
        """(train, val) example counts of the shapes source."""
        n_val = self.val_size if self.val_size is not None else round(self.num_examples * self.val_fraction)
        n_val = min(max(n_val, 1), self.num_examples - 1)
        return self.num_examples - n_val, n_val

    def existing_path(self) -> Path:
        """The data path, checked against the file system (missing: a ConfigError saying so)."""
        if not self.path:
            raise ConfigError(f"source {self.source!r} needs a path")
        path = Path(self.path).expanduser()
        if self.source in ("folder", "emoji") and not path.is_dir():
            raise ConfigError(f"{self.source} dataset path {str(path)!r} is not an existing directory")
        if self.source == "webdataset" and not path.exists() and not any(
                glob.glob(p) for p in expand_braces(str(path))):
            raise ConfigError(f"webdataset path {str(path)!r} does not exist and matches no files")
        return path


def expand_braces(pattern: str) -> list[str]:
    """webdataset's shard notation: `{0000..0099}` (a zero-padded range) and `{a,b}` alternatives."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    bounds = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if bounds:
        low, high = bounds.groups()
        parts = [str(i).zfill(len(low)) for i in range(int(low), int(high) + 1)]
    else:
        parts = body.split(",")
    return [name for part in parts for name in expand_braces(head + part + tail)]
