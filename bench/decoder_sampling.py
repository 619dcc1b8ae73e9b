"""Sampling A/B on one trained decoder: evaluate its held-out figures under several guidance scales
and best-of counts (one process, one after another), and keep each setting's sample grid to look at.

    python bench/decoder_sampling.py runs/decoder/model --val-shards S/val --out /tmp/sampling \\
        --guidance 1.0 1.5 2.0 --best-of 1 4 --set size=182

The evaluation settings are the --preset's (decoder.config.DecoderEvalConfig), changed by `--set`; the
figures are those of the decoder's end-of-training evaluation, without the inversion round trip.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from clip.encoder import load_encoder
from core.config import apply_overrides
from core.errors import UnclipError
from decoder.config import PRESETS
from decoder.evaluate import evaluate_decoder
from decoder.io import load_decoder
from decoder.train import load_split

SHOWN = ("clip_score", "clip_score_real_lowres", "caption_top5", "caption_real_lowres_top5", "kid",
         "kid_real_split", "clip_consistency", "decode_seconds_per_image")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/decoder_sampling.py", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a trained decoder's model folder")
    parser.add_argument("--val-shards", required=True, help="held-out embedding shards of the decoder's CLIP")
    parser.add_argument("--out", required=True, help="folder for results.json and each setting's grid")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    parser.add_argument("--best-of", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--preset", default="demo", choices=list(PRESETS), help="whose evaluation settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        base = apply_overrides(PRESETS[args.preset].eval, args.overrides).override(invert_size=1, invert_steps=1)
        decoder, spec = load_decoder(args.model)
        shards, val, real = load_split(args.val_shards, decoder.cfg.image_size, limit=base.size)
        encoder = load_encoder(spec, "cpu")
    except UnclipError as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for guidance in args.guidance:
        for best_of in args.best_of:
            cfg = base.override(guidance=guidance, decoder_best_of=best_of)
            start = time.perf_counter()
            metrics = evaluate_decoder(decoder, val, real, shards.captions, encoder, cfg)
            grid = metrics.pop("sample_grid", None)
            if grid is not None:
                grid.save(out / f"grid_g{guidance:g}_b{best_of}.png")
            metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            rows.append({"guidance": guidance, "best_of": best_of, "seconds": time.perf_counter() - start, **metrics})
            print(" ".join(f"{k}={rows[-1][k]:.3f}" for k in ("guidance", "best_of", *SHOWN) if k in rows[-1]),
                  flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
