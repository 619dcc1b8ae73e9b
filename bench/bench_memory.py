"""Peak memory of each training stage on datasets of 10k and 200k examples: it must not grow with the data.

    python bench/bench_memory.py                       # 10k and 200k, every stage
    python bench/bench_memory.py --sizes 2000,20000 --stages prior,decoder --json mem.json

For each size the benchmark writes synthetic shards once (random pictures and embeddings, in the
formats the stages stream: image shards for the CLIP and the upsamplers, embedding shards for the prior
and the decoder), then trains each stage at tiny widths in a process of its own, long enough to read
several shuffle buffers, and reports that process's peak resident memory. Everything is held to the
same `buffer_rows`, the only data a stage keeps in memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STAGES = ("clip", "prior", "decoder", "upsampler1")
CLIP_SIZE, DECODER_SIZE, HIGH_RES, BUFFER = 32, 16, 32, 4096


def clip_overrides(n: int) -> list[str]:
    return [f"data.num_examples={n + 64}", "data.val_size=64", "eval_size=64", "train.steps=300",
            "train.batch_size=64", f"buffer_rows={BUFFER}", "hard_fraction=0.5"]


def upsampler_overrides(n: int) -> list[str]:
    return [f"data.num_examples={n + 8}", "data.val_size=8", "eval_size=2", "upsampler.low_res=8",
            f"upsampler.high_res={HIGH_RES}", "crop=16", "train.steps=300", "train.batch_size=16",
            f"buffer_rows={BUFFER}", f"data.image_size={HIGH_RES}"]


def write_images(folder: Path, size: int, count: int, identity: dict, tokens: int = 0) -> None:
    """Image shards in the form data.shards.prepare_images leaves them, with random pictures."""
    from data.shards import finish_index, shard_name, write_shard

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for k, start in enumerate(range(0, count, 2048)):
        n = min(2048, count - start)
        tensors = {"images": torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)}
        if tokens:
            tensors["text_ids"] = torch.randint(1, 49000, (n, tokens), generator=g, dtype=torch.int32)
        write_shard(folder / shard_name(k), tensors, [f"caption {start + i % 997}" for i in range(n)],
                    [str(start + i) for i in range(n)])
    finish_index(folder, {"identity": {**identity, "image_size": size}, "image_size": size})


def prepare(root: Path, n: int) -> None:
    """Every stage's inputs for n training examples, under root."""
    from clip.shards import write_shards
    from clip.train import settings_for as clip_settings
    from data import open_dataset
    from prior.testing import fake_pairs, fake_spec
    from upsamplers.config import settings_for as upsampler_settings

    clip = clip_settings("smoke", clip_overrides(n))
    for split, count in (("train", n), ("val", 64)):
        ds = open_dataset(clip.data, split)
        identity = {"dataset": ds.fingerprint(), "tokens": f"open_clip/ViT-B-32/{clip.model.context_length}"}
        write_images(root / "clip" / "images" / split, CLIP_SIZE, count, identity, clip.model.context_length)
    up = upsampler_settings(1, "smoke", upsampler_overrides(n))
    for split, count in (("train", n), ("val", 2)):
        ds = open_dataset(up.data, split)
        write_images(root / "upsampler1" / "images" / split, HIGH_RES, count, {"dataset": ds.fingerprint()})
    spec = fake_spec()
    for start in range(0, n, 16384):  # embedding shards a part at a time, so preparing is bounded too
        count = min(16384, n - start)
        pairs = fake_pairs(count, seed=start)
        pairs["images"] = torch.randint(0, 256, (count, 3, DECODER_SIZE, DECODER_SIZE), dtype=torch.uint8)
        write_shards(root / "embed" / f"part{start // 16384:04d}", spec, pairs, [f"c{i}" for i in range(count)],
                     [str(start + i) for i in range(count)], image_size=DECODER_SIZE, shard_size=2048)
    merge_parts(root / "embed", root / "shards")


def merge_parts(parts: Path, folder: Path) -> None:
    """One embedding shard set from the parts (renamed shards, one index and stats over all)."""
    from clip.shards import EmbeddingShards, finish_embedding_index
    from data.shards import shard_name

    folder.mkdir(parents=True, exist_ok=True)
    k, spec = 0, None
    for part in sorted(parts.iterdir()):
        spec = EmbeddingShards.open(part).spec
        for shard in sorted(part.glob("shard_*.safetensors")):
            shard.rename(folder / shard_name(k))
            k += 1
    finish_embedding_index(folder, spec, "synthetic", "train", DECODER_SIZE)


def train(stage: str, root: Path, n: int) -> None:
    """One stage's training on the prepared inputs (run in a process of its own)."""
    torch.set_num_threads(1)
    if stage == "clip":
        from clip.train import settings_for, train_clip

        train_clip(settings_for("smoke", clip_overrides(n)), root / "clip")
    elif stage == "prior":
        from prior.train import settings_for, train_prior

        train_prior(settings_for("smoke", ["train.steps=300", "train.batch_size=64", f"buffer_rows={BUFFER}"]),
                    root / "shards", root / "prior")
    elif stage == "decoder":
        from decoder.config import settings_for
        from decoder.train import train_decoder

        overrides = ["train.steps=100", "train.batch_size=16", "draft.steps=100", "draft.batch_size=64",
                     f"buffer_rows={BUFFER}"]
        train_decoder(settings_for("smoke", overrides), root / "shards", root / "decoder")
    else:
        from upsamplers.config import settings_for
        from upsamplers.train import train_upsampler

        train_upsampler(settings_for(1, "smoke", upsampler_overrides(n)), root / "upsampler1")
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM: getrusage's maxrss keeps the parent's peak
    across fork and exec, so it would report the benchmark's, not the stage's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(stage: str, root: Path, n: int) -> dict:
    import shutil

    for leftover in ("run", "model", "draft_run"):  # train from scratch, never resume an earlier measurement
        shutil.rmtree(root / stage / leftover, ignore_errors=True)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", stage, str(root), str(n)], capture_output=True,
                         text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{stage} at {n}: {out.stderr[-2000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,200000", help="training examples per dataset (default: 10k, 200k)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--workdir", default=None, help="where the shards go (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        stage, root, n = args.child
        train(stage, Path(root), int(n))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    stages = args.stages.split(",")
    base = Path(args.workdir or tempfile.mkdtemp(prefix="unclip-memory-"))
    rows: dict[str, dict] = {stage: {} for stage in stages}
    for n in sizes:
        root = base / str(n)
        t = time.perf_counter()
        prepare(root, n)
        print(f"prepared {n} examples in {time.perf_counter() - t:.0f} s under {root}", file=sys.stderr)
        for stage in stages:
            rows[stage][n] = measure(stage, root, n)
            print(f"{stage} at {n}: {rows[stage][n]['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    print("| stage | " + " | ".join(f"peak RSS at {n:,}" for n in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    for stage, by_size in rows.items():
        print(f"| {stage} | " + " | ".join(f"{by_size[n]['peak_rss_mb']:.0f} MB" for n in sizes) + " |")
    print(f"\nbuffer_rows {BUFFER} for every stage; images {CLIP_SIZE} px (CLIP), {DECODER_SIZE} px (decoder), "
          f"{HIGH_RES} px (upsampler)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
