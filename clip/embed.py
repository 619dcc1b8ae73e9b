"""Encode a dataset split once with a frozen CLIP into safetensors shards (resumable).

    python -m clip.embed --clip runs/clip/model --split train --out runs/shards/train
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from clip.bank import square
from clip.encoder import ClipEncoder, load_encoder
from clip.shards import INDEX, EmbeddingShards, read_shard_meta, shard_name, write_index, write_shard
from clip.spec import ClipSpec, check_same_clip
from core.checkpoint import read_json
from core.errors import CheckpointError
from data import DatasetConfig, Example, open_dataset

log = logging.getLogger("clip.embed")


def _chunks(dataset, shard_size: int, start_shard: int) -> Iterator[tuple[int, list[Example]]]:
    """(shard number, examples) from `start_shard` on; map-style sources skip earlier shards for free."""
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        n = len(dataset)
        for k in range(start_shard, (n + shard_size - 1) // shard_size):
            items = (dataset[i] for i in range(k * shard_size, min(n, (k + 1) * shard_size)))
            yield k, [ex for ex in items if ex is not None]
        return
    stream = iter(dataset)
    k = 0
    while chunk := list(islice(stream, shard_size)):
        if k >= start_shard:
            yield k, chunk
        k += 1


def encode_examples(encoder: ClipEncoder, examples: list[Example], image_size: int | None) -> dict[str, torch.Tensor]:
    captions = [ex.caption for ex in examples]
    text = encoder.encode_text(captions)
    out = {
        "image_embeds": encoder.encode_image([ex.image for ex in examples]).cpu(),
        "text_embeds": text.embeds.cpu(),
        "text_tokens": text.tokens.cpu(),
        "text_mask": text.mask.cpu(),
    }
    if image_size:
        pixels = [np.asarray(square(ex.image, image_size), dtype=np.uint8).transpose(2, 0, 1) for ex in examples]
        out["images"] = torch.from_numpy(np.stack(pixels))
    return out


def embed_dataset(spec: ClipSpec, data: DatasetConfig, split: str, out: str | Path, *, image_size: int | None = 64,
                  shard_size: int = 2048, device: str = "cpu",
                  after_shard: Callable[[int], None] | None = None) -> EmbeddingShards:
    """Write the shards of one split; finished shards of an interrupted run are kept and skipped."""
    out = Path(out)
    dataset = open_dataset(data, split)
    fingerprint = dataset.fingerprint()
    if (out / INDEX).is_file():
        done = EmbeddingShards.open(out)
        if done.dataset_fingerprint == fingerprint and done.spec.fingerprint() == spec.fingerprint():
            log.info("%s is up to date (%d examples)", out, done.count)
            return done
        raise CheckpointError(f"{out} holds shards of another dataset or CLIP; choose a new --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    _check_progress(out, spec, fingerprint, image_size, shard_size)
    finished = sorted(p.name for p in out.glob("shard_*.safetensors"))
    start = len(finished)
    if start:
        log.info("resuming %s after %d finished shards", out, start)
    encoder = load_encoder(spec, device)
    total = None
    if hasattr(dataset, "__len__"):
        total = (len(dataset) + shard_size - 1) // shard_size
    before = dataset.skips.as_dict()
    for k, examples in tqdm(_chunks(dataset, shard_size, start), total=total, initial=start, desc=f"embed {split}",
                            dynamic_ncols=True):
        now = dataset.skips.as_dict()
        skips = _diff(now, before)
        before = now
        if examples:
            write_shard(out / shard_name(k), encode_examples(encoder, examples, image_size),
                        [e.caption for e in examples], [e.key for e in examples], skips)
        if after_shard is not None:
            after_shard(k)
    shards, skips = [], {}
    for path in sorted(out.glob("shard_*.safetensors")):
        meta = read_shard_meta(path)
        shards.append({"file": path.name, "count": len(meta["captions"])})
        skips = _add(skips, meta.get("skips", {}))
    if not shards:
        raise CheckpointError(f"no usable examples in the {split} split ({dataset.skips})")
    write_index(out, spec, fingerprint, split, shards, image_size, skips)
    result = EmbeddingShards.open(out)
    if dataset.skips.total:
        log.warning("%s split: %s", split, dataset.skips)
    return result


def _check_progress(out: Path, spec: ClipSpec, fingerprint: str, image_size: int | None, shard_size: int) -> None:
    """A partial run may only be resumed with the same inputs."""
    progress = {"clip": spec.fingerprint(), "dataset": fingerprint, "image_size": image_size, "shard_size": shard_size}
    marker = out / "progress.json"
    if marker.is_file() and read_json(marker) != progress:
        raise CheckpointError(f"{out} holds a partial run with other settings; choose a new --out or delete it")
    from core.checkpoint import write_json

    write_json(marker, progress)


def _diff(now: dict, before: dict) -> dict:
    return {kind: {r: n - before.get(kind, {}).get(r, 0) for r, n in counts.items() if n - before.get(kind, {}).get(r, 0)}
            for kind, counts in now.items()}


def _add(a: dict, b: dict) -> dict:
    out = {kind: dict(counts) for kind, counts in a.items()}
    for kind, counts in b.items():
        for r, n in counts.items():
            out.setdefault(kind, {})[r] = out.get(kind, {}).get(r, 0) + n
    return out


def load_clip_spec(path: str | Path) -> ClipSpec:
    """A ClipSpec from a model folder (clip_spec.json inside) or a spec JSON file."""
    path = Path(path)
    return ClipSpec.load(path) if path.is_dir() else ClipSpec.parse(read_json(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip.embed", description=__doc__.split("\n")[0])
    parser.add_argument("--clip", required=True, help="CLIP model folder (with clip_spec.json) or a spec JSON file")
    parser.add_argument("--split", default="train", choices=["train", "val"])
    parser.add_argument("--out", required=True, help="output folder for the shards")
    parser.add_argument("--image-size", type=int, default=64, help="also store images at this size (0: none)")
    parser.add_argument("--shard-size", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", help="start from this CLIP training preset's dataset (the split the cascade "
                        "embeds, e.g. demo) instead of the dataset defaults; --set changes it further")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset setting, e.g. source=folder, path=/data/pets (repeatable)")
    args = parser.parse_args(argv)
    from core.cli import run_cli
    from core.config import apply_overrides

    def job():
        spec = load_clip_spec(args.clip)
        data = DatasetConfig()
        if args.preset:
            from clip.train import settings_for

            data = settings_for(args.preset).data
        shards = embed_dataset(spec, apply_overrides(data, args.overrides), args.split, args.out,
                               image_size=args.image_size or None, shard_size=args.shard_size, device=args.device)
        print(f"{shards.count} examples embedded into {args.out} ({len(shards.index['shards'])} shards)")
        check_same_clip(spec, shards.spec, "embedding shards")
    return run_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
