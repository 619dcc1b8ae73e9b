"""Tar shards in the img2dataset layout (KEY.jpg + KEY.txt or KEY.json), streamed, never extracted."""

from __future__ import annotations

import glob
import hashlib
import json
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import torch.utils.data

from core.errors import ConfigError
from data.captions import caption_text
from data.config import DatasetConfig, Split, expand_braces
from data.example import Example
from data.images import load_rgb
from data.skips import BadItem, SkipCounter
from data.splits import split_of, stream_share

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# Preference order when a key has several images.
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")

Group = tuple[str, dict[str, bytes]]


def list_shards(path: Path) -> list[Path]:
    """A directory's shards, a single shard file, or the files a glob or brace pattern matches; sorted."""
    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.name.endswith(SHARD_SUFFIXES) and p.is_file())
    elif path.is_file():
        shards = [path]
    else:
        names = {name for pattern in expand_braces(str(path)) for name in glob.glob(pattern)}
        shards = sorted(Path(p) for p in names if Path(p).is_file())
    if not shards:
        raise ConfigError(f"no tar shards ({', '.join(SHARD_SUFFIXES)}) at {str(path)!r}")
    return shards


def read_groups(shard: Path, skips: SkipCounter) -> Iterator[Group]:
    """(key, {extension: bytes}) for consecutive members sharing a key, as webdataset does:
    key = member path up to the first dot of its file name. A broken shard is counted
    (truncated_shard) and ends early; what was read before the break is still yielded."""
    key, files = None, {}
    try:
        with tarfile.open(shard, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, name = posixpath.split(member.name)
                stem, _, extension = name.partition(".")
                member_key = posixpath.join(folder, stem)
                if member_key != key:
                    if key is not None:
                        yield key, files
                    key, files = member_key, {}
                files[extension.lower()] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        skips.add("truncated_shard", shard.name, f"{type(err).__name__}: {err}")
    if key is not None:  # after a break, with the members that were read whole
        yield key, files


class TarShardDataset(torch.utils.data.IterableDataset):
    """A streaming source: no length, no random access; iterate, or iterate one shard."""

    def __init__(self, cfg: DatasetConfig, split: Split) -> None:
        self.cfg, self.split = cfg, split
        self.shards = list_shards(cfg.existing_path())
        self.skips = SkipCounter()

    def __iter__(self) -> Iterator[Example]:
        return self.iter_shard(0, 1)

    def iter_shard(self, rank: int, world: int) -> Iterator[Example]:
        """This reader's share: whole shards when there are enough, else every n-th example.
        Inside a DataLoader worker the share is split again between workers."""
        share = stream_share(len(self.shards), rank, world)
        ordinal = -1
        for shard in self.shards[share.file_start :: share.file_step]:
            for key, files in read_groups(shard, self.skips):
                ordinal += 1
                if ordinal % share.item_step != share.item_start:
                    continue
                if split_of(key, self.cfg.val_fraction) != self.split:
                    continue
                example = self._decode(key, files)
                if example is not None:
                    yield example

    def _decode(self, key: str, files: dict[str, bytes]) -> Example | None:
        try:
            image_bytes = next((files[ext] for ext in IMAGE_MEMBERS if ext in files), None)
            if image_bytes is None:
                raise BadItem("missing_image", f"members: {', '.join(sorted(files))}")
            caption = caption_text(_raw_caption(files))
            image, converted_from = load_rgb(image_bytes, min_side=self.cfg.min_side, max_aspect=self.cfg.max_aspect)
        except BadItem as bad:
            self.skips.add(bad.reason, key, bad.detail)
            return None
        if converted_from is not None:
            self.skips.convert(converted_from, key)
        return Example(key=key, image=image, caption=caption)

    def fingerprint(self) -> str:
        """Hash of shard names and sizes and the settings that choose this split's examples."""
        digest = hashlib.sha256(
            f"webdataset/{self.split}/{self.cfg.val_fraction}/{self.cfg.min_side}/{self.cfg.max_aspect}".encode()
        )
        for shard in self.shards:
            digest.update(f"\0{shard.name}\0{shard.stat().st_size}".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()[:16]


def _raw_caption(files: dict[str, bytes]) -> bytes | str | None:
    """KEY.txt, else the "caption" field of KEY.json."""
    if "txt" in files:
        return files["txt"]
    if "json" not in files:
        return None
    try:
        record = json.loads(files["json"].decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as err:
        raise BadItem("bad_caption_json", str(err)) from None
    caption = record.get("caption") if isinstance(record, dict) else None
    return caption if isinstance(caption, str) else None
