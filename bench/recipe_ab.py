"""Recipe A/B: train one stage in several variants on the same data, one after another, and tabulate
their held-out figures and wall times (the grids are kept beside them, to be looked at).

    python bench/recipe_ab.py decoder --preset demo --shards S/train --val-shards S/val --out /tmp/ab \\
        --variant base= --variant no-draft=decoder.draft_width=0 \\
        --variant eps=decoder.noise.prediction=epsilon,decoder.draft_residual=false
    python bench/recipe_ab.py prior --shards S/train --val-shards S/val --out /tmp/ab-prior --variant base= \\
        --variant wide=prior.layers=6
    python bench/recipe_ab.py clip --set data.source=emoji --out /tmp/ab-clip --variant base= \
        --variant short=train.steps=500
    python bench/recipe_ab.py upsampler1 --set data.source=emoji --out /tmp/ab-up1 --variant base= \\
        --variant two-steps=upsampler.sample_steps=2

A variant is NAME=KEY=VALUE,KEY=VALUE (nothing after the first `=`: the preset as it is); `--set`
applies to every variant. Each variant trains in its own process (its own folder under --out, resumed
if it is there already), so variants never share threads or memory, and one at a time.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "clip": ["-m", "clip.train"],
    "prior": ["-m", "prior.train"],
    "decoder": ["-m", "decoder.train"],
    "upsampler1": ["-m", "upsamplers.train", "--stage", "1"],
    "upsampler2": ["-m", "upsamplers.train", "--stage", "2"],
}
SHOWN = {
    "clip": ("retrieval_top1", "retrieval_top5", "i2t_top1", "t2i_top1"),
    "prior": ("cos_pred_image", "cos_pred_text", "retrieval_top1", "baseline_retrieval_top1", "val_loss"),
    "decoder": ("clip_score", "clip_score_real_lowres", "caption_top5", "caption_real_lowres_top5", "kid",
                "kid_real_split", "clip_consistency", "clip_consistency_single", "inversion_psnr"),
    "upsampler1": ("psnr", "bicubic_psnr", "sharpness", "bicubic_sharpness", "ssim", "flat_noise",
                   "bicubic_flat_noise"),
}
SHOWN["upsampler2"] = SHOWN["upsampler1"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition("=")
    if not name:
        raise SystemExit(f"--variant {text!r}: give NAME=KEY=VALUE,... (or NAME= for the preset)")
    return name, [item for item in re.split(r",(?![^\[]*\])", rest) if item]  # commas in [..] stay


def run(args: argparse.Namespace, name: str, overrides: list[str]) -> dict:
    out = Path(args.out) / name
    command = [sys.executable, *COMMANDS[args.stage], "--preset", args.preset, "--out", str(out)]
    if args.stage in ("prior", "decoder"):
        command += ["--shards", args.shards, "--val-shards", args.val_shards]
    for item in [*args.set, *overrides]:
        command += ["--set", item]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"variant {name} failed")
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    return {"overrides": overrides, "seconds": seconds, **metrics}


def table(stage: str, rows: dict[str, dict]) -> str:
    shown = [k for k in SHOWN[stage] if any(k in r for r in rows.values())]
    lines = ["| variant | minutes | " + " | ".join(shown) + " |", "|---" * (len(shown) + 2) + "|"]
    for name, row in rows.items():
        cells = [f"{row[k]:.3g}" + (f" ({row[k + '_low']:.2f}-{row[k + '_high']:.2f})" if k + "_low" in row else "")
                 if k in row else "-" for k in shown]
        lines.append(f"| {name} | {row['seconds'] / 60:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=sorted(COMMANDS))
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--shards", help="training embedding shards (prior, decoder)")
    parser.add_argument("--val-shards", help="held-out embedding shards (prior, decoder)")
    parser.add_argument("--out", required=True, help="one folder per variant goes here")
    parser.add_argument("--variant", action="append", required=True, help="NAME=KEY=VALUE,... (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every variant")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.stage in ("prior", "decoder") and not (args.shards and args.val_shards):
        parser.error(f"{args.stage} variants need --shards and --val-shards")
    rows = {}
    for text in args.variant:
        name, overrides = parse_variant(text)
        rows[name] = run(args, name, overrides)
        print(f"{name}: " + ", ".join(f"{k} {rows[name][k]:.4g}" for k in SHOWN[args.stage] if k in rows[name]),
              file=sys.stderr, flush=True)
    print(table(args.stage, rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
