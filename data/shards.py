"""Tensor shards on disk: one row per example, written once, read a few shards at a time.

A shard set is a folder with `index.json` (row count, shard list, skip counts, and whatever the
writer adds) and `shard_NNNNN.safetensors` files holding tensors [n, ...] with the examples'
captions and keys in their metadata. Training streams them (`ShardSet.batches`): every epoch the
shards come in a new order, a buffer of them is shuffled row by row, and nothing but the buffer
is ever in memory, however large the dataset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from core.checkpoint import read_json, write_atomic, write_json
from core.errors import CheckpointError, ConfigError

INDEX = "index.json"
PROGRESS = "progress.json"
Batches = Callable[[int, int, int], Iterator[dict[str, torch.Tensor]]]


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def write_shard(path: Path, tensors: Mapping[str, torch.Tensor], captions: Sequence[str], keys: Sequence[str],
                skips: Mapping | None = None) -> None:
    stored = {k: v.contiguous() for k, v in tensors.items()}
    meta = {"captions": json.dumps(list(captions)), "keys": json.dumps(list(keys)), "skips": json.dumps(skips or {})}
    write_atomic(path, lambda tmp: save_file(stored, tmp, metadata=meta))


def read_shard_meta(path: Path) -> dict:
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises several types for damaged files
        raise CheckpointError(f"cannot read shard {path}: {err}") from None
    return {k: json.loads(v) for k, v in meta.items()}


def read_shard(path: Path, fields: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    try:
        if fields is None:
            return load_file(str(path))
        with safe_open(str(path), "pt") as f:
            return {name: f.get_tensor(name) for name in fields}
    except Exception as err:
        raise CheckpointError(f"cannot read shard {path}: {err} (truncated?)") from None


def add_counts(a: Mapping, b: Mapping) -> dict:
    """Skip counts {kind: {reason: n}} added up."""
    out = {kind: dict(counts) for kind, counts in a.items()}
    for kind, counts in b.items():
        for reason, n in counts.items():
            out.setdefault(kind, {})[reason] = out.get(kind, {}).get(reason, 0) + n
    return out


def finish_index(folder: Path, extra: Mapping[str, Any]) -> dict:
    """Write index.json over the finished shards of `folder` (their counts and skips summed)."""
    shards, skips = [], {}
    for path in sorted(folder.glob("shard_*.safetensors")):
        meta = read_shard_meta(path)
        shards.append({"file": path.name, "count": len(meta["captions"])})
        skips = add_counts(skips, meta.get("skips", {}))
    index = {**extra, "count": sum(s["count"] for s in shards), "shards": shards, "skips": skips}
    write_json(folder / INDEX, index)
    return index


def mix(*parts: int) -> int:
    """One generator seed from several integers."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (2**63)
    return value


class ShardSet:
    """A finished shard set, read lazily: nothing but the index is read when it is opened."""

    def __init__(self, folder: Path, index: dict) -> None:
        self.folder = folder
        self.index = index
        self.count: int = index["count"]
        self.skips: dict = index.get("skips", {})
        self.shards: list[dict] = index["shards"]
        with safe_open(str(folder / self.shards[0]["file"]), "pt") as f:
            self.fields = tuple(f.keys())

    @classmethod
    def open(cls, folder: str | Path, hint: str = "") -> ShardSet:
        folder = Path(folder)
        if not (folder / INDEX).is_file():
            raise CheckpointError(f"{folder} holds no finished shards (no {INDEX}){hint}")
        index = read_json(folder / INDEX)
        if not index.get("shards"):
            raise CheckpointError(f"{folder}: the shard set is empty (every example was skipped?)")
        return cls(folder, index)

    @cached_property
    def captions(self) -> list[str]:
        return [c for s in self.shards for c in read_shard_meta(self.folder / s["file"])["captions"]]

    @cached_property
    def keys(self) -> list[str]:
        return [k for s in self.shards for k in read_shard_meta(self.folder / s["file"])["keys"]]

    def check_fields(self, fields: Sequence[str]) -> None:
        missing = [f for f in fields if f not in self.fields]
        if missing:
            raise CheckpointError(f"{self.folder}: shards lack {missing} (they hold {list(self.fields)})")

    def read(self, i: int, fields: Sequence[str]) -> dict[str, torch.Tensor]:
        return read_shard(self.folder / self.shards[i]["file"], fields)

    def head(self, n: int | None, fields: Sequence[str]) -> dict[str, torch.Tensor]:
        """The first n rows (all: None), reading only the shards they are in: evaluation sets."""
        self.check_fields(fields)
        n = self.count if n is None else min(n, self.count)
        parts, have = [], 0
        for i, shard in enumerate(self.shards):
            if have >= n:
                break
            parts.append(self.read(i, fields))
            have += shard["count"]
        return {f: torch.cat([p[f] for p in parts])[:n] for f in fields}

    def batches(self, fields: Sequence[str], batch_size: int, seed: int, buffer_rows: int = 16384,
                prepare: Callable[[dict[str, torch.Tensor], torch.Generator], Iterator[dict]] | None = None) -> Batches:
        """`batches(epoch, rank, world)`: shuffled full batches, a pure function of its arguments (as exact
        resume needs). Shards are read in an epoch's own order, `buffer_rows` rows' worth at a time, and
        each buffer is shuffled; every process takes every world-th row of it, and every process yields
        as many batches. `prepare(buffer, generator)` may replace the plain batching of a buffer's rows
        (e.g. to add hard negatives); it gets the shuffled rows of this process."""
        self.check_fields(fields)
        if self.count < batch_size:
            raise ConfigError(f"{self.folder} holds {self.count} examples, fewer than one batch of {batch_size}")
        if buffer_rows < batch_size:
            raise ConfigError(f"a shuffle buffer of {buffer_rows} rows is smaller than one batch of {batch_size}")
        per_buffer = max(1, round(buffer_rows / max(s["count"] for s in self.shards)))

        def batches(epoch: int, rank: int, world: int) -> Iterator[dict[str, torch.Tensor]]:
            g = torch.Generator().manual_seed(mix(seed, epoch))
            order = torch.randperm(len(self.shards), generator=g).tolist()
            carry: dict[str, torch.Tensor] | None = None
            for start in range(0, len(order), per_buffer):
                parts = [self.read(i, fields) for i in order[start:start + per_buffer]]
                rows = {f: torch.cat([p[f] for p in parts]) for f in fields}
                n = len(rows[fields[0]]) // world * world  # the same share for every process
                perm = torch.randperm(len(rows[fields[0]]), generator=g)[:n][rank::world]
                mine = {f: v[perm] for f, v in rows.items()}
                if carry is not None:
                    mine = {f: torch.cat([carry[f], mine[f]]) for f in fields}
                usable = len(mine[fields[0]]) // batch_size * batch_size
                carry = {f: v[usable:] for f, v in mine.items()}
                body = {f: v[:usable] for f, v in mine.items()}
                if prepare is not None:
                    yield from prepare(body, g)
                    continue
                for i in range(0, usable, batch_size):
                    yield {f: v[i:i + batch_size] for f, v in body.items()}
        return batches


def chunks(dataset, shard_size: int, start_shard: int = 0, limit: int | None = None
           ) -> Iterator[tuple[int, list]]:
    """(shard number, its examples) from `start_shard` on, over at most `limit` items; map-style sources
    skip the earlier shards without reading them, streaming ones read through them."""
    if shard_size < 1:
        raise ConfigError(f"shard size must be at least 1, got {shard_size}")
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        n = len(dataset) if limit is None else min(limit, len(dataset))
        for k in range(start_shard, (n + shard_size - 1) // shard_size):
            items = (dataset[i] for i in range(k * shard_size, min(n, (k + 1) * shard_size)))
            yield k, [ex for ex in items if ex is not None]
        return
    stream = iter(dataset) if limit is None else islice(dataset, limit)
    k = 0
    while chunk := list(islice(stream, shard_size)):
        if k >= start_shard:
            yield k, chunk
        k += 1


def write_shards(folder: str | Path, dataset, identity: Mapping[str, Any],
                 encode: Callable[[list], Mapping[str, torch.Tensor]], *, shard_size: int = 2048,
                 limit: int | None = None, desc: str = "shards", extra: Mapping[str, Any] | None = None,
                 after_shard: Callable[[int], None] | None = None,
                 finish: Callable[[Path], dict] | None = None) -> dict:
    """Write `encode(examples)` of a dataset split shard by shard into `folder`, then its index.

    Resumable: the finished shards of an interrupted run are kept and skipped. A finished set with the
    same `identity` is reused; a folder holding another one (finished or partial) is refused. Each
    shard records the skips the dataset counted while its examples were read. `finish(folder)` writes
    the index last (default: `finish_index` with `extra` and the identity). Returns the index."""
    folder = Path(folder)
    if (folder / INDEX).is_file():
        index = read_json(folder / INDEX)
        if index.get("identity") == dict(identity):
            return index
        raise CheckpointError(f"{folder} holds shards of another dataset or settings; choose a new folder or delete it")
    progress = {"identity": dict(identity), "shard_size": shard_size, "limit": limit}
    if (folder / PROGRESS).is_file() and read_json(folder / PROGRESS) != progress:
        raise CheckpointError(f"{folder} holds a partial run with other settings; choose a new folder or delete it")
    created = _first_missing(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / PROGRESS, progress)
    try:
        _write_all(folder, dataset, encode, shard_size, limit, desc, after_shard)
    except BaseException:
        if not any(folder.glob("shard_*.safetensors")):  # nothing worth resuming: leave no half-made folder
            (folder / PROGRESS).unlink(missing_ok=True)
            _remove_empty(folder, created)
        raise
    index = (finish or (lambda f: finish_index(f, {**(extra or {}), "identity": dict(identity)})))(folder)
    (folder / PROGRESS).unlink(missing_ok=True)
    return index


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of `folder`'s path that does not exist yet (None: it exists)."""
    missing = None
    while not folder.exists():
        missing, folder = folder, folder.parent
    return missing


def _remove_empty(folder: Path, up_to: Path | None) -> None:
    """Remove `folder` and its parents up to `up_to` (the folders this run made), while empty."""
    if up_to is None:
        return
    while not any(folder.iterdir()):
        folder.rmdir()
        if folder == up_to:
            break
        folder = folder.parent


def _write_all(folder, dataset, encode, shard_size, limit, desc, after_shard) -> None:
    for leftover in folder.glob(".shard_*"):  # half-written by a killed run (write_atomic's temporaries)
        leftover.unlink(missing_ok=True)
    done = [int(p.name[6:11]) for p in folder.glob("shard_*.safetensors")]
    start = max(done) + 1 if done else 0  # a shard whose examples were all skipped has no file
    total = None
    if hasattr(dataset, "__len__"):
        n = len(dataset) if limit is None else min(limit, len(dataset))
        total = (n + shard_size - 1) // shard_size
    skips = getattr(dataset, "skips", None)
    before = skips.as_dict() if skips is not None else {}
    for k, examples in tqdm(chunks(dataset, shard_size, start, limit), total=total, initial=start, desc=desc,
                            dynamic_ncols=True, leave=False):
        now = skips.as_dict() if skips is not None else {}
        if examples:
            write_shard(folder / shard_name(k), encode(examples), [e.caption for e in examples],
                        [e.key for e in examples], _difference(now, before))
        before = now
        if after_shard is not None:
            after_shard(k)
    if not any(folder.glob("shard_*.safetensors")):
        raise CheckpointError(f"no usable examples for {folder} ({skips if skips is not None else 'empty split'})")


def prepare_images(dataset, size: int, folder: str | Path, identity: Mapping[str, Any], shard_size: int = 2048,
                   limit: int | None = None, desc: str = "prepare images",
                   tokenize: Callable[[list[str]], torch.Tensor] | None = None) -> ShardSet:
    """Decode a dataset split once into uint8 image shards [n, 3, size, size] (centre square crop,
    bicubic) with captions and keys, and `tokenize`'s token ids [n, L] if given: what the image stages
    stream while they train."""
    from data.transforms import square_pixels

    def encode(examples) -> dict[str, torch.Tensor]:
        out = {"images": torch.from_numpy(np.stack([square_pixels(e.image, size) for e in examples]))}
        if tokenize is not None:
            out["text_ids"] = tokenize([e.caption for e in examples])
        return out

    write_shards(folder, dataset, {**identity, "image_size": size}, encode, shard_size=shard_size, limit=limit,
                 desc=desc, extra={"image_size": size})
    return ShardSet.open(folder)


def _difference(now: Mapping, before: Mapping) -> dict:
    return {kind: {r: n - before.get(kind, {}).get(r, 0) for r, n in counts.items() if n - before.get(kind, {}).get(r, 0)}
            for kind, counts in now.items()}
