"""Embedding shards: what the embed step writes once and every later stage trains from.

A shard set is a folder with `index.json` (ClipSpec, dataset fingerprint, split, shard list,
skip counts), `stats.safetensors` (per-dimension mean/std of the image embeddings) and
`shard_NNNNN.safetensors` files holding, per example: image_embeds [D], text_embeds [D]
(both L2-normalised), text_tokens [L, W] (float16), text_mask [L] and, optionally, the image
as uint8 [3, S, S]; captions and keys travel in the shard's metadata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from clip.spec import ClipSpec
from core.checkpoint import load_weights, read_json, write_atomic, write_json
from core.errors import CheckpointError

INDEX = "index.json"
STATS = "stats.safetensors"
FIELDS = ("image_embeds", "text_embeds", "text_tokens", "text_mask", "images")


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def write_shard(path: Path, tensors: Mapping[str, torch.Tensor], captions: Sequence[str], keys: Sequence[str],
                skips: Mapping | None = None) -> None:
    stored = {k: v.contiguous() for k, v in tensors.items()}
    if "text_tokens" in stored:
        stored["text_tokens"] = stored["text_tokens"].to(torch.float16)
    if "text_mask" in stored:
        stored["text_mask"] = stored["text_mask"].to(torch.uint8)
    meta = {"captions": json.dumps(list(captions)), "keys": json.dumps(list(keys)), "skips": json.dumps(skips or {})}
    write_atomic(path, lambda tmp: save_file(stored, tmp, metadata=meta))


def read_shard_meta(path: Path) -> dict:
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises several types for damaged files
        raise CheckpointError(f"cannot read shard {path}: {err}") from None
    return {k: json.loads(v) for k, v in meta.items()}


def write_index(folder: Path, spec: ClipSpec, dataset_fingerprint: str, split: str, shards: list[dict],
                image_size: int | None, skips: Mapping) -> None:
    embeds = torch.cat([load_weights(folder / s["file"])["image_embeds"].float() for s in shards])
    save_stats(folder, embeds)
    write_json(folder / INDEX, {
        "clip_spec": spec.model_dump(mode="json"),
        "dataset_fingerprint": dataset_fingerprint,
        "split": split,
        "count": sum(s["count"] for s in shards),
        "shards": shards,
        "image_size": image_size,
        "skips": dict(skips),
    })


def save_stats(folder: Path, image_embeds: torch.Tensor) -> None:
    stats = {"image_mean": image_embeds.mean(0), "image_std": image_embeds.std(0).clamp_min(1e-6)}
    write_atomic(folder / STATS, lambda tmp: save_file({k: v.contiguous() for k, v in stats.items()}, tmp))


class EmbeddingShards:
    """A finished shard set, read back."""

    def __init__(self, folder: Path, index: dict) -> None:
        self.folder = folder
        self.index = index
        self.spec = ClipSpec.parse(index["clip_spec"])
        self.dataset_fingerprint: str = index["dataset_fingerprint"]
        self.split: str = index["split"]
        self.count: int = index["count"]
        self.image_size: int | None = index["image_size"]
        self.skips: dict = index.get("skips", {})
        stats = load_weights(folder / STATS)
        self.image_mean, self.image_std = stats["image_mean"], stats["image_std"]
        metas = [read_shard_meta(folder / s["file"]) for s in index["shards"]]
        self.captions: list[str] = [c for m in metas for c in m["captions"]]
        self.keys: list[str] = [k for m in metas for k in m["keys"]]
        with safe_open(str(folder / index["shards"][0]["file"]), "pt") as f:
            self.fields = tuple(k for k in FIELDS if k in f.keys())

    @classmethod
    def open(cls, folder: str | Path) -> EmbeddingShards:
        folder = Path(folder)
        if not (folder / INDEX).is_file():
            raise CheckpointError(f"{folder} holds no finished embedding shards (no {INDEX}); run `python -m clip.embed` first")
        index = read_json(folder / INDEX)
        if not index.get("shards"):
            raise CheckpointError(f"{folder}: the shard set is empty (every example was skipped?)")
        return cls(folder, index)

    def load(self, fields: Sequence[str] = FIELDS[:4]) -> dict[str, torch.Tensor]:
        missing = [f for f in fields if f not in self.fields]
        if missing:
            raise CheckpointError(f"{self.folder}: shards lack {missing}; re-run the embed step with images stored"
                                  if "images" in missing else f"{self.folder}: shards lack {missing}")
        parts = [load_weights(self.folder / s["file"]) for s in self.index["shards"]]
        out = {f: torch.cat([p[f] for p in parts]) for f in fields}
        if "text_tokens" in out:
            out["text_tokens"] = out["text_tokens"].float()
        if "text_mask" in out:
            out["text_mask"] = out["text_mask"].bool()
        return out

    def fingerprint(self) -> str:
        ident = json.dumps([self.spec.fingerprint(), self.dataset_fingerprint, self.split, self.count], sort_keys=True)
        return hashlib.sha256(ident.encode()).hexdigest()[:16]


def write_shards(folder: str | Path, spec: ClipSpec, tensors: Mapping[str, torch.Tensor], captions: Sequence[str],
                 keys: Sequence[str], dataset_fingerprint: str = "test", split: str = "train",
                 image_size: int | None = None, shard_size: int = 1024) -> EmbeddingShards:
    """Write a complete shard set from in-memory tensors (tests, and data prepared elsewhere)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n, shards = len(captions), []
    for i, start in enumerate(range(0, n, shard_size)):
        part = {k: v[start:start + shard_size] for k, v in tensors.items()}
        write_shard(folder / shard_name(i), part, captions[start:start + shard_size], keys[start:start + shard_size])
        shards.append({"file": shard_name(i), "count": len(captions[start:start + shard_size])})
    write_index(folder, spec, dataset_fingerprint, split, shards, image_size, {})
    return EmbeddingShards.open(folder)
