"""A directory tree of images with captions from captions.tsv, captions.jsonl or sidecar .txt files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from core.errors import ConfigError
from data.base import MapDataset
from data.captions import caption_text
from data.config import DatasetConfig, Split
from data.example import Example
from data.images import IMAGE_EXTENSIONS, load_rgb
from data.skips import BadItem, SkipCounter
from data.splits import split_of

log = logging.getLogger("data")

TSV_INDEX, JSONL_INDEX = "captions.tsv", "captions.jsonl"
TSV_HEADER_NAMES = ("file", "filename", "image", "path", "name", "key")
JSONL_FILE_FIELDS = ("file", "image", "path")
JSONL_CAPTION_FIELDS = ("caption", "text")

RawCaption = bytes | str | None
Row = tuple[str | None, RawCaption, int]  # file name (None: unreadable), caption, line number from 1
Dropped = tuple[str, str, str]  # reason, the file name that decides its split, where it was


class FolderDataset(MapDataset):
    """Key = image path relative to the root (with '/'); the caption comes from the index
    files at the root (captions.tsv, then captions.jsonl) or else from KEY-without-suffix.txt."""

    def __init__(self, cfg: DatasetConfig, split: Split) -> None:
        self.cfg, self.split = cfg, split
        self.root = cfg.existing_path()
        self.skips = SkipCounter()
        self._listing = _scan(self.root)
        images = [name for name in self._listing if name.lower().endswith(IMAGE_EXTENSIONS)]
        if not images:
            raise ConfigError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {str(self.root)!r}")
        self._index, self._index_digest, dropped = read_caption_index(self.root)
        self._same = identical_files(self.root, self._listing, images)
        # identical pictures share a split (their first name's), so none is both trained and held out
        self._keys = [name for name in images if self._mine(name)]
        self._duplicates = self._find_duplicates()
        self._count_unused(images, dropped)

    def __len__(self) -> int:
        return len(self._keys)

    def _mine(self, name: str) -> bool:
        return split_of(self._same.get(name, name), self.cfg.val_fraction) == self.split

    def _count_unused(self, images: list[str], dropped: list[Dropped]) -> None:
        """Count what can never be an example: files that are no image this reads (an SVG, a HEIC, ...),
        caption rows naming no image, unreadable rows, and rows a later one for the same file replaced.
        Each is counted by the split its name falls in, so both splits together count it once."""
        image_set = set(images)
        sidecars = {str(Path(name).with_suffix(".txt").as_posix()) for name in images}
        for name in self._listing:
            if name in image_set or name in sidecars or name in (TSV_INDEX, JSONL_INDEX) or not self._mine(name):
                continue
            reason = "caption_without_image" if name.endswith(".txt") else "unsupported_format"
            self.skips.add(reason, name, Path(name).suffix or "no extension")
        for name in set(self._index).difference(images):
            if self._mine(name):
                self.skips.add("caption_without_image", name, "named in a caption index")
        for reason, name, where in dropped:
            if self._mine(name):
                self.skips.add(reason, where, name)

    def key(self, index: int) -> str:
        self._check_index(index)
        return self._keys[index]

    def _find_duplicates(self) -> dict[str, str]:
        """Files whose picture and caption repeat an earlier file's: the pair is in the data already.
        (The same picture with another caption is a second caption of it, and kept.)"""
        first: dict[tuple[str, object], str] = {}
        duplicates = {}
        for name in sorted(self._same):
            pair = (self._same[name], self._raw_caption(name))
            if pair[1] is None:  # no caption: counted as such when read
                continue
            if pair in first:
                duplicates[name] = first[pair]
            else:
                first[pair] = name
        return duplicates

    def __getitem__(self, index: int) -> Example | None:
        key = self.key(index)
        if key in self._duplicates:
            self.skips.add("duplicate_file", key, f"same picture and caption as {self._duplicates[key]}")
            return None
        try:
            caption = caption_text(self._raw_caption(key))
            image, converted_from = load_rgb(self.root / key, min_side=self.cfg.min_side,
                                             max_aspect=self.cfg.max_aspect)
        except BadItem as bad:
            self.skips.add(bad.reason, key, bad.detail)
            return None
        if converted_from is not None:
            self.skips.convert(converted_from, key)
        return Example(key=key, image=image, caption=caption)

    def _raw_caption(self, key: str) -> RawCaption:
        if key in self._index:
            return self._index[key]
        sidecar = str(Path(key).with_suffix(".txt").as_posix())
        if sidecar not in self._listing:
            return None
        try:
            return (self.root / sidecar).read_bytes()
        except OSError:
            return None

    def fingerprint(self) -> str:
        """Hash of every file's relative path, size and mtime when opened, the index files'
        contents, and the settings that choose this split's examples."""
        digest = hashlib.sha256(
            f"folder/{self.split}/{self.cfg.val_fraction}/{self.cfg.min_side}/{self.cfg.max_aspect}".encode())
        for name, (size, mtime_ns) in sorted(self._listing.items()):
            digest.update(f"\0{name}\0{size}\0{mtime_ns}".encode("utf-8", "surrogateescape"))
        digest.update(self._index_digest)
        return digest.hexdigest()[:16]


def identical_files(root: Path, listing: dict[str, tuple[int, int]], names: list[str]) -> dict[str, str]:
    """For files with the very same bytes as another, the first (sorted) such file's name. Only files
    that share their size with another are read and hashed, so a large tree costs little."""
    by_size: dict[int, list[str]] = {}
    for name in names:
        size = listing[name][0]
        if size > 0:
            by_size.setdefault(size, []).append(name)
    same: dict[str, str] = {}
    for group in (g for g in by_size.values() if len(g) > 1):
        by_digest: dict[bytes, list[str]] = {}
        for name in sorted(group):
            try:
                digest = hashlib.sha1((root / name).read_bytes()).digest()
            except OSError:  # reported when the item is read
                continue
            by_digest.setdefault(digest, []).append(name)
        for members in by_digest.values():
            if len(members) > 1:
                same.update(dict.fromkeys(members, members[0]))
    return same


def _scan(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root (recursively): relative posix path -> (size, mtime in ns)."""
    listing = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            try:
                stat = path.stat()
            except OSError:  # a dangling link: listed, and reported when read
                stat = None
            listing[path.relative_to(root).as_posix()] = (
                (stat.st_size, stat.st_mtime_ns) if stat else (-1, -1)
            )
    return listing


def read_caption_index(root: Path) -> tuple[dict[str, RawCaption], bytes, list[Dropped]]:
    """Captions from root/captions.tsv and root/captions.jsonl (a later row wins, and the jsonl over
    the tsv), a digest of both files' contents, and the rows that give no caption: replaced by a
    later row for the same file (repeated_caption) or unreadable (bad_caption_row)."""
    index: dict[str, RawCaption] = {}
    where: dict[str, str] = {}
    dropped: list[Dropped] = []
    digest = hashlib.sha256()
    for name, parse in ((TSV_INDEX, _parse_tsv), (JSONL_INDEX, _parse_jsonl)):
        path = root / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        for file_name, caption, line in parse(data, path):
            here = f"{name} line {line}"
            if file_name is None:
                dropped.append(("bad_caption_row", here, here))
                continue
            if file_name in index:
                dropped.append(("repeated_caption", file_name, where[file_name]))
            index[file_name], where[file_name] = caption, here
    if dropped:
        log.warning("%d caption rows give no caption (repeated or unreadable), e.g. %s", len(dropped), dropped[0][2])
    return index, digest.digest(), dropped


def _normalise_name(name: str) -> str:
    name = name.strip().replace("\\", "/")
    return name[2:] if name.startswith("./") else name


def _parse_tsv(data: bytes, path: Path) -> list[Row]:
    """filename<TAB>caption per line, optional header; captions stay bytes, decoded per item."""
    rows: list[Row] = []
    for number, line in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines()):
        if not line.strip():
            continue
        name, _, caption = line.partition(b"\t")  # no tab: an empty caption, counted when read
        file_name = _normalise_name(name.decode("utf-8", "surrogateescape"))
        if number == 0 and file_name.lower() in TSV_HEADER_NAMES:
            continue
        rows.append((file_name, caption, number + 1))
    return rows


def _parse_jsonl(data: bytes, path: Path) -> list[Row]:
    """One object per line with "file"/"image"/"path" and "caption"/"text"; a line that is not such
    an object is a row without a file name."""
    rows: list[Row] = []
    for number, line in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines()):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError:
            record = None
        file_name = (
            next((record[f] for f in JSONL_FILE_FIELDS if f in record), None)
            if isinstance(record, dict)
            else None
        )
        if not isinstance(file_name, str):
            rows.append((None, None, number + 1))
            continue
        caption = next((record[f] for f in JSONL_CAPTION_FIELDS if f in record), None)
        rows.append((_normalise_name(file_name), caption if isinstance(caption, str) else None, number + 1))
    return rows
