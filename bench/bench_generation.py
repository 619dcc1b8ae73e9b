"""Do generated images show their prompts? Zero-shot attribute accuracy (project CLIP) of text-to-image
samples on held-out canonical shapes prompts, for one or more guidance and best-of settings side by side.

    python bench/bench_generation.py                                  # registry champions, 32 prompts x 4
    python bench/bench_generation.py --guidance decoder=2 --guidance decoder=3 --json gen.json
    python bench/bench_generation.py --best-of 1 --best-of 4           # prior candidates per image
    python bench/bench_generation.py --decoder-best-of 1 --decoder-best-of 4   # decodes per image
    python bench/bench_generation.py --models runs/models --prompts 8 --images 2 --output-size 128
    python bench/bench_generation.py --tiny --prompts 2 --images 1    # smoke run on tiny random models

Prompts are the canonical captions of the preset's shapes validation split (never trained on; the demo
scores the first 8 of them), with the same seeds for every setting. Images stop at --output-size
(default: the first upsampler's side): the CLIP judges at its own small resolution, and the last
upsampler adds time, not attributes.
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
from core.metrics import format_share  # noqa: E402
from data import open_dataset  # noqa: E402
from data.shapes import canonical_caption, parse_caption  # noqa: E402
from flows.presets import cascade_settings  # noqa: E402
from unclip.evaluate import prompt_accuracy  # noqa: E402
from unclip.settings import DEFAULT_DECODER_BEST_OF, GUIDED, parse_stage_values  # noqa: E402


def held_out_prompts(preset: str, count: int) -> list[str]:
    """Canonical captions of the validation stream of the preset's shapes data (the demo scores the same)."""
    val = open_dataset(cascade_settings(preset).clip.data, "val")
    prompts = [canonical_caption(a) for a in (parse_caption(val.caption(i)) for i in range(len(val))) if a]
    if len(prompts) < count:
        raise SystemExit(f"the {preset} preset's validation split has {len(prompts)} shapes captions, fewer than {count}")
    return prompts[:count]


def bench(args: argparse.Namespace) -> dict:
    pipe = load(args)
    prompts = held_out_prompts(args.preset, args.prompts)
    size = args.output_size or (pipe.sizes[1] if len(pipe.sizes) > 1 else pipe.sizes[0])
    scored = [p for p in prompts for _ in range(args.images)]
    rows = {}
    for text in args.guidance or [""]:
        guidance = parse_stage_values(text, GUIDED, "guidance")
        for best_of, decoder_best_of in itertools.product(args.best_of or [2], args.decoder_best_of or [DEFAULT_DECODER_BEST_OF]):
            images = pipe.generate(prompts, args.images, args.seed, guidance=guidance, output_size=size,
                                   best_of=best_of, decoder_best_of=decoder_best_of)
            accuracy = prompt_accuracy(images, scored, pipe.encoder)
            name = f"{text or 'defaults'}, best of {best_of}, decoder best of {decoder_best_of}"
            rows[name] = {"guidance": images[0].info["unclip"]["guidance"], "best_of": best_of,
                          "decoder_best_of": decoder_best_of, **accuracy}
            print(name, " ".join(f"{k} {v:.2f}" for k, v in accuracy.items()), file=sys.stderr, flush=True)
    return {"prompts": len(prompts), "images_per_prompt": args.images, "output_size": size, "models": pipe.models(),
            "accuracy": rows}


def table(result: dict) -> str:
    rows, n = result["accuracy"], result["prompts"] * result["images_per_prompt"]
    attrs = [k for k in next(iter(rows.values())) if k not in ("guidance", "best_of", "decoder_best_of")]
    lines = ["| guidance | best of | decoder best of | " + " | ".join(attrs) + " |", "|---" * (len(attrs) + 3) + "|"]
    for row in rows.values():
        guidance = ", ".join(f"{k} {v:g}" for k, v in row["guidance"].items())
        cells = [guidance, str(row["best_of"]), str(row["decoder_best_of"]), *(format_share(row[a], n) for a in attrs)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\n{n} images; in brackets the 95% (Wilson) interval of each share")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser)
    parser.add_argument("--preset", default="demo", help="preset whose held-out shapes captions are the prompts")
    parser.add_argument("--prompts", type=int, default=32, help="held-out prompts (default: 32)")
    parser.add_argument("--images", type=int, default=4, help="images per prompt (default: 4)")
    parser.add_argument("--guidance", action="append", help="per-stage guidance to compare, e.g. decoder=2 "
                        "(repeatable; default: the pipeline's)")
    parser.add_argument("--best-of", type=int, action="append", help="prior candidates per image, the one closest "
                        "to the caption kept (repeatable; default: 2, the paper's)")
    parser.add_argument("--decoder-best-of", type=int, action="append", help="decodes per image, the one CLIP "
                        "reads closest to its embedding kept (repeatable; default: the pipeline's, 1 is the paper's)")
    parser.add_argument("--output-size", type=int, default=None, help="image side (default: the first upsampler's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.images < 1 or min(args.best_of or [1]) < 1 or min(args.decoder_best_of or [1]) < 1:
        parser.error("--prompts, --images, --best-of and --decoder-best-of must be at least 1")
    args.compile = False
    torch.set_num_threads(args.threads)
    result = bench(args)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
