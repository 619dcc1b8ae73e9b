"""Embedding shards: what the embed step writes once and every later stage trains from.

A shard set (data/shards.py) whose `index.json` also names the ClipSpec, the dataset fingerprint and
the split, with `stats.safetensors` (per-dimension mean/std of the image embeddings) beside it. Per
example: image_embeds [D], text_embeds [D] (both L2-normalised), text_tokens [L, W] (float16),
text_mask [L] and, optionally, the image as uint8 [3, S, S]; captions and keys travel in the
shards' metadata. Stages stream them (`batches`) or read the first rows (`head`, evaluation sets).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from clip.spec import ClipSpec
from core.checkpoint import load_weights, write_atomic
from core.errors import CheckpointError
from data.shards import INDEX, ShardSet, add_counts, finish_index, read_shard, shard_name, write_shard
from data.skips import skip_metrics

STATS = "stats.safetensors"
FIELDS = ("image_embeds", "text_embeds", "text_tokens", "text_mask", "images")
TEXT = FIELDS[:4]
HINT = "; run `python -m clip.embed` first"


def stored(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The on-disk dtypes: token states as float16, masks as uint8."""
    out = dict(tensors)
    if "text_tokens" in out:
        out["text_tokens"] = out["text_tokens"].to(torch.float16)
    if "text_mask" in out:
        out["text_mask"] = out["text_mask"].to(torch.uint8)
    return out


def decoded(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dtypes stages use: float32 token states and embeddings, bool masks."""
    out = dict(tensors)
    for name in ("image_embeds", "text_embeds", "text_tokens"):
        if name in out:
            out[name] = out[name].float()
    if "text_mask" in out:
        out["text_mask"] = out["text_mask"].bool()
    return out


def save_stats(folder: Path, shards: Sequence[dict]) -> None:
    """Mean and std of the image embeddings, summed shard by shard in float64 (bounded memory)."""
    total, total_sq, n = None, None, 0
    for shard in shards:
        x = read_shard(folder / shard["file"], ["image_embeds"])["image_embeds"].double()
        total = x.sum(0) if total is None else total + x.sum(0)
        total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
        n += len(x)
    mean = total / n
    var = (total_sq - n * mean * mean) / max(1, n - 1)
    stats = {"image_mean": mean.float(), "image_std": var.clamp_min(0).sqrt().float().clamp_min(1e-6)}
    write_atomic(folder / STATS, lambda tmp: save_file({k: v.contiguous() for k, v in stats.items()}, tmp))


def finish_embedding_index(folder: Path, spec: ClipSpec, dataset_fingerprint: str, split: str,
                           image_size: int | None, identity: Mapping | None = None) -> dict:
    """The stats, then the index (last, so a set with an index is complete)."""
    save_stats(folder, [{"file": p.name} for p in sorted(folder.glob("shard_*.safetensors"))])
    return finish_index(folder, {"clip_spec": spec.model_dump(mode="json"), "dataset_fingerprint": dataset_fingerprint,
                                 "split": split, "image_size": image_size, "identity": dict(identity or {})})


class EmbeddingShards(ShardSet):
    """A finished embedding shard set, read back lazily."""

    def __init__(self, folder: Path, index: dict) -> None:
        super().__init__(folder, index)
        self.spec = ClipSpec.parse(index["clip_spec"])
        self.dataset_fingerprint: str = index["dataset_fingerprint"]
        self.split: str = index["split"]
        self.image_size: int | None = index["image_size"]
        stats = load_weights(folder / STATS)
        self.image_mean, self.image_std = stats["image_mean"], stats["image_std"]

    @classmethod
    def open(cls, folder: str | Path, hint: str = HINT) -> EmbeddingShards:
        return super().open(folder, hint)

    def load(self, fields: Sequence[str] = TEXT, limit: int | None = None) -> dict[str, torch.Tensor]:
        """The first `limit` rows (all: None) of `fields`, as stages use them: for evaluation sets and
        small data; training streams `batches` instead."""
        if "images" in fields and "images" not in self.fields:
            raise CheckpointError(f"{self.folder}: the shards hold no images; re-run the embed step with an image size")
        return decoded(self.head(limit, fields))

    def batches(self, fields: Sequence[str], batch_size: int, seed: int, buffer_rows: int = 16384, prepare=None):
        raw = super().batches(fields, batch_size, seed, buffer_rows, prepare)

        def batches(epoch: int, rank: int, world: int):
            for batch in raw(epoch, rank, world):
                yield decoded(batch)
        return batches

    def fingerprint(self) -> str:
        ident = json.dumps([self.spec.fingerprint(), self.dataset_fingerprint, self.split, self.count], sort_keys=True)
        return hashlib.sha256(ident.encode()).hexdigest()[:16]


def shard_skips(*sets: EmbeddingShards | None) -> dict[str, float]:
    """The skip and conversion counts of the embedding step over these shard sets, as flat metrics."""
    counts: dict = {}
    for shards in sets:
        if shards is not None:
            counts = add_counts(counts, shards.skips)
    return skip_metrics(counts)


def write_shards(folder: str | Path, spec: ClipSpec, tensors: Mapping[str, torch.Tensor], captions: Sequence[str],
                 keys: Sequence[str], dataset_fingerprint: str = "test", split: str = "train",
                 image_size: int | None = None, shard_size: int = 1024) -> EmbeddingShards:
    """Write a complete shard set from in-memory tensors (tests, and data prepared elsewhere)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(captions)
    for i, start in enumerate(range(0, n, shard_size)):
        part = {k: v[start:start + shard_size] for k, v in tensors.items()}
        write_shard(folder / shard_name(i), stored(part), captions[start:start + shard_size],
                    keys[start:start + shard_size])
    finish_embedding_index(folder, spec, dataset_fingerprint, split, image_size)
    return EmbeddingShards.open(folder)


__all__ = ["FIELDS", "INDEX", "STATS", "TEXT", "EmbeddingShards", "finish_embedding_index", "shard_skips", "stored",
           "write_shards"]
