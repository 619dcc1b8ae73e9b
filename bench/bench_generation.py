"""Do generated images show their prompts? Text-to-image samples of held-out captions scored beside the
real images of the same captions, for one or more guidance and best-of settings side by side.

    python bench/bench_generation.py                                  # registry champions, 32 prompts x 4
    python bench/bench_generation.py --data shapes --guidance decoder=2 --guidance decoder=3 --json gen.json
    python bench/bench_generation.py --prior-best-of 1 --prior-best-of 4   # prior candidates per image
    python bench/bench_generation.py --decoder-best-of 1 --decoder-best-of 4   # decodes per image
    python bench/bench_generation.py --models runs/models --prompts 8 --images 2 --output-size 128
    python bench/bench_generation.py --split train                    # training captions: memorised or not
    python bench/bench_generation.py --tiny --prompts 2 --images 1    # smoke run on tiny random models

Prompts are the captions of a fixed sample of the dataset's held-out split (never trained on; the demo
draws the same), with the same seeds for every setting. Figures (unclip/evaluate.py): CLIP score and
caption retrieval among all the split's captions, each beside the real images', KID against the real
images, and on shapes the attribute readings. Images stop at --output-size (default: the first
upsampler's side): the CLIP judges at its own small resolution.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_pipeline import add_model_args, load  # noqa: E402
from flows.demo import caption_pool, pick_examples, split_captions  # noqa: E402
from flows.presets import cascade_settings  # noqa: E402
from unclip.evaluate import image_metrics  # noqa: E402
from unclip.settings import GUIDED, parse_stage_values  # noqa: E402

SHOWN = ("clip_score", "clip_score_real", "caption_top1", "caption_top5", "caption_real_top5", "kid",
         "kid_real_split")


def bench(args: argparse.Namespace) -> dict:
    pipe = load(args)
    settings = cascade_settings(args.preset, data="shapes" if args.tiny and not args.data else args.data)
    examples = pick_examples(settings, args.split, args.prompts)
    prompts = [e.caption for e in examples]
    captions = split_captions(settings, args.split)
    pool = caption_pool(captions, examples, len(split_captions(settings, "val")))
    size = args.output_size or (pipe.sizes[1] if len(pipe.sizes) > 1 else pipe.sizes[0])
    scored = [e for e in examples for _ in range(args.images)]
    rows = {}
    for text in args.guidance or [""]:
        guidance = parse_stage_values(text, GUIDED, "guidance")
        for prior_best_of, decoder_best_of in itertools.product(args.prior_best_of or [None],
                                                                args.decoder_best_of or [None]):
            images = pipe.generate(prompts, args.images, args.seed, guidance=guidance, output_size=size,
                                   prior_best_of=prior_best_of, decoder_best_of=decoder_best_of)
            figures = image_metrics(images, [e.caption for e in scored], pipe.encoder, pool,
                                    [e.image for e in scored])
            record = images[0].info["unclip"]
            name = f"{text or 'defaults'}, prior best of {record['prior_best_of']}, decoder best of {record['decoder_best_of']}"
            rows[name] = {"guidance": record["guidance"], "prior_best_of": record["prior_best_of"],
                          "decoder_best_of": record["decoder_best_of"], **figures}
            print(name, " ".join(f"{k} {figures[k]:.3g}" for k in SHOWN if k in figures), file=sys.stderr, flush=True)
    return {"data": settings.data_source, "split": args.split, "prompts": len(prompts), "images_per_prompt": args.images,
            "pool": len(pool), "output_size": size, "models": pipe.models(), "rows": rows}


def table(result: dict) -> str:
    rows = result["rows"]
    first = next(iter(rows.values()))
    columns = [k for k in SHOWN if k in first] + [k for k in first if k.startswith("zeroshot_") and "_real" not in k]
    lines = ["| guidance | prior best of | decoder best of | " + " | ".join(columns) + " |", "|---" * (len(columns) + 3) + "|"]
    for row in rows.values():
        guidance = ", ".join(f"{k} {v:g}" for k, v in row["guidance"].items())
        cells = [guidance, str(row["prior_best_of"]), str(row["decoder_best_of"])]
        for key in columns:
            low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
            cells.append(f"{row[key]:.3g}" + (f" ({low:.3g}-{high:.3g})" if low is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    n = result["prompts"] * result["images_per_prompt"]
    lines.append(f"\n{n} images of {result['prompts']} {result['split']} captions of {result['data']}; retrieval among "
                 f"{result['pool']} captions; in brackets the 95% intervals")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser)
    parser.add_argument("--preset", default="demo", help="preset whose dataset the prompts come from (default: demo)")
    parser.add_argument("--data", default=None, help="the dataset (as flows.train --data; default: the preset's)")
    parser.add_argument("--split", default="val", choices=["val", "train"], help="held-out or training captions")
    parser.add_argument("--prompts", type=int, default=32, help="held-out prompts (default: 32)")
    parser.add_argument("--images", type=int, default=4, help="images per prompt (default: 4)")
    parser.add_argument("--guidance", action="append", help="per-stage guidance to compare, e.g. decoder=2 "
                        "(repeatable; default: the pipeline's)")
    parser.add_argument("--prior-best-of", type=int, action="append", help="prior candidates per image, the one closest "
                        "to the caption kept (repeatable; default: the prior's own)")
    parser.add_argument("--decoder-best-of", type=int, action="append", help="decodes per image, the one CLIP "
                        "reads closest to its embedding kept (repeatable; default: the pipeline's, 1 is the paper's)")
    parser.add_argument("--output-size", type=int, default=None, help="image side (default: the first upsampler's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.images < 1 or min(args.prior_best_of or [1]) < 1 or min(args.decoder_best_of or [1]) < 1:
        parser.error("--prompts, --images, --prior-best-of and --decoder-best-of must be at least 1")
    args.compile = False
    torch.set_num_threads(args.threads)
    result = bench(args)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
