"""Encode a dataset split once with a frozen CLIP into safetensors shards (resumable).

    python -m clip.embed --clip runs/clip/model --split train --out runs/shards/train
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from clip.encoder import ClipEncoder, load_encoder
from clip.shards import INDEX, EmbeddingShards, finish_embedding_index, stored
from clip.spec import ClipSpec, check_same_clip
from core.checkpoint import read_json
from core.cli import ArgumentParser, int_in
from core.devices import check_device
from core.errors import CheckpointError, ConfigError
from data import DatasetConfig, Example, open_dataset
from data.shards import write_shards
from data.transforms import square_pixels

log = logging.getLogger("clip.embed")


def encode_examples(encoder: ClipEncoder, examples: list[Example], image_size: int | None,
                    batch_size: int = 256) -> dict[str, torch.Tensor]:
    captions = [ex.caption for ex in examples]
    text = encoder.encode_text(captions, batch_size=batch_size)
    out = {
        "image_embeds": encoder.encode_image([ex.image for ex in examples], batch_size=batch_size).cpu(),
        "text_embeds": text.embeds.cpu(),
        "text_tokens": text.tokens.cpu(),
        "text_mask": text.mask.cpu(),
    }
    if image_size:
        out["images"] = torch.from_numpy(np.stack([square_pixels(ex.image, image_size) for ex in examples]))
    return stored(out)


def embed_dataset(spec: ClipSpec, data: DatasetConfig, split: str, out: str | Path, *, image_size: int | None = 64,
                  shard_size: int = 2048, device: str = "cpu", batch_size: int = 256,
                  after_shard: Callable[[int], None] | None = None) -> EmbeddingShards:
    """Write the shards of one split; finished shards of an interrupted run are kept and skipped."""
    out = Path(out)
    if image_size is not None and image_size < 1:
        raise ConfigError(f"image size must be positive (or 0 for none), got {image_size}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    dataset = open_dataset(data, split)
    fingerprint = dataset.fingerprint()
    identity = {"clip": spec.fingerprint(), "dataset": fingerprint, "image_size": image_size}
    if (out / INDEX).is_file():
        done = EmbeddingShards.open(out)
        if done.dataset_fingerprint == fingerprint and done.spec.fingerprint() == spec.fingerprint():
            log.info("%s is up to date (%d examples)", out, done.count)
            return done
        raise CheckpointError(f"{out} holds shards of another dataset or CLIP; choose a new --out or delete it")
    encoder = None

    def encode(examples):
        nonlocal encoder
        if encoder is None:  # loaded on the first shard to write: a finished run needs no CLIP
            encoder = load_encoder(spec, device)
        return encode_examples(encoder, examples, image_size, batch_size)

    write_shards(out, dataset, identity, encode, shard_size=shard_size, desc=f"embed {split}", after_shard=after_shard,
                 finish=lambda folder: finish_embedding_index(folder, spec, fingerprint, split, image_size, identity))
    if dataset.skips.total:
        log.warning("%s split: %s", split, dataset.skips)
    return EmbeddingShards.open(out)


def load_clip_spec(path: str | Path) -> ClipSpec:
    """A ClipSpec from a model folder (clip_spec.json inside) or a spec JSON file."""
    path = Path(path)
    return ClipSpec.load(path, own_files=True) if path.is_dir() else ClipSpec.parse(read_json(path))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m clip.embed", description=__doc__.split("\n")[0])
    parser.add_argument("--clip", required=True, help="CLIP model folder (with clip_spec.json) or a spec JSON file")
    parser.add_argument("--split", default="train", choices=["train", "val"])
    parser.add_argument("--out", required=True, help="output folder for the shards")
    parser.add_argument("--image-size", type=int_in(0, 4096), default=64,
                        help="also store images at this size (0: none) (default: 64)")
    parser.add_argument("--shard-size", type=int_in(1, 1_000_000), default=2048,
                        help="examples per shard (default: 2048)")
    parser.add_argument("--batch-size", type=int_in(1, 65536), default=256,
                        help="images and captions encoded at once (default: 256)")
    parser.add_argument("--device", default=None, help="torch device (default: the accelerator if there is one, else cpu)")
    parser.add_argument("--preset", help="start from this CLIP training preset's dataset (the split the cascade "
                        "embeds, e.g. demo) instead of the dataset defaults; --set changes it further")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset setting, e.g. source=folder, path=/data/pets (repeatable)")
    args = parser.parse_args(argv)
    from core.cli import check_output_dir, run_cli
    from core.config import apply_overrides

    def job():
        device = check_device(args.device)
        check_output_dir(args.out)
        spec = load_clip_spec(args.clip)
        data = DatasetConfig()
        if args.preset:
            from clip.train import settings_for

            data = settings_for(args.preset).data
        shards = embed_dataset(spec, apply_overrides(data, args.overrides), args.split, args.out,
                               image_size=args.image_size or None, shard_size=args.shard_size,
                               device=device, batch_size=args.batch_size)
        print(f"{shards.count} examples embedded into {args.out} ({len(shards.index['shards'])} shards)")
        check_same_clip(spec, shards.spec, "embedding shards")
    return run_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
