"""Sampling A/B on the demo's registered cascade: held-out captions drawn at the decoder's resolution
under several decoder guidance scales and best-of counts, each scored by the demo's judge CLIP (and by
the cascade's own CLIP beside it), one setting after another in one process.

    python bench/demo_sampling.py --workdir runs --out /tmp/sampling --captions 100 \\
        --guidance 1.0 1.5 2.0 --decoder-best-of 1 4 --prior-best-of 1 2

Run it in the folder `make demo` ran in (its MLflow registry and `--workdir`); the judge CLIP is the
demo's, trained there already (or trained now). Each setting's grid is kept in --out to be looked at.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHOWN = ("clip_score", "clip_score_real", "caption_top5", "caption_real_top5", "kid", "kid_real_split",
         "cascade_clip.clip_score", "cascade_clip.caption_top5")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/demo_sampling.py", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--data", default=None, help="the demo's --data (default: the preset's)")
    parser.add_argument("--workdir", default="runs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--captions", type=int, default=100, help="held-out captions per setting")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0], help="decoder guidance")
    parser.add_argument("--decoder-best-of", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--prior-best-of", type=int, nargs="+", default=[None], help="default: the models' own")
    args = parser.parse_args(argv)

    from clip.encoder import load_encoder
    from flows.demo import caption_pool, judge_clip, judged_metrics, pick_examples, split_captions
    from flows.inference import load_pipeline
    from flows.presets import cascade_settings
    from unclip.evaluate import champion_encoder
    from unclip.provenance import contact_sheet

    settings = cascade_settings(args.preset, [], args.data)
    judge, own = load_encoder(judge_clip.fn(settings, args.workdir)), champion_encoder()  # loaded once
    held = pick_examples(settings, "val", args.captions)
    held_out = split_captions(settings, "val")
    pool = caption_pool(held_out, held, len(held_out))
    pipe = load_pipeline("registry", precision="auto", progress=False)
    size = settings.decoder.decoder.image_size
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for guidance, decoder_best_of, prior_best_of in itertools.product(args.guidance, args.decoder_best_of,
                                                                      args.prior_best_of):
        start = time.perf_counter()
        images = pipe.generate([e.caption for e in held], guidance={"decoder": guidance}, output_size=size,
                               prior_best_of=prior_best_of, decoder_best_of=decoder_best_of)
        seconds = time.perf_counter() - start
        name = f"g{guidance:g}_d{decoder_best_of}_p{prior_best_of or 'default'}"
        contact_sheet(images[:32], columns=8).save(out / f"{name}.png")
        figures = judged_metrics(images, held, pool, judge, own)
        rows.append({"setting": name, "guidance": guidance, "decoder_best_of": decoder_best_of,
                     "prior_best_of": prior_best_of, "seconds": seconds, **figures})
        print(f"{name:<18} {seconds:6.1f}s " + " ".join(f"{k}={figures[k]:.3f}" for k in SHOWN if k in figures),
              flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
