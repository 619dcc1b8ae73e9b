"""Manipulations on held-out shapes images: variation and interpolation round trips, text diffs.

    python bench/bench_manipulations.py                           # the registered champions, 16 images
    python bench/bench_manipulations.py --models runs/models --images 32 --json manip.json
    python bench/bench_manipulations.py --tiny --images 2         # smoke run on tiny random models

- variations: DDIM-invert each image with its CLIP embedding, decode with η = 0: PSNR to the image;
- interpolation (noise="slerp"): PSNR of both end frames to their images;
- text diffs "a … red <shape> …" → "a … blue <shape> …" (images whose object is red, background not
  blue): per θ, the share whose colour the project's CLIP now reads as blue, the share that keep the
  true shape, position and background (read among captions of the colour the frame has), and the
  share that do both; with the paper's text direction (--thetas) and the prior's image-embedding
  direction (--prior-thetas), each with the decoder reading the blended captions and without them
  (--captions), each keeping the best of 1 or more decodes per edited frame (--best-of). θ = 0 is the
  decoder's reconstruction of the image, and `real/others_kept` the CLIP's reading of the images
  themselves at the output side: the ceilings of "kept". `--judge` names a second CLIP, trained apart,
  whose readings are added under `judge/`: best-of ranks frames with the models' own CLIP, so the
  judge shows whether a gain is more than that CLIP agreeing with itself.
Round trips are scored at the decoder's resolution (the latent they invert); text diffs at
--output-size (default: the decoder's too; the upsamplers add time, not attributes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_pipeline import add_model_args, load  # noqa: E402
from clip.encoder import load_encoder  # noqa: E402
from clip.spec import ClipSpec  # noqa: E402
from core.metrics import format_share  # noqa: E402
from data import DatasetConfig, open_dataset  # noqa: E402
from data.shapes import ATTRIBUTE_VALUES, canonical_caption  # noqa: E402
from data.shapes.probe import predict_attributes, render_match  # noqa: E402
from decoder.evaluate import psnr  # noqa: E402
from unclip.images import images_to_tensor  # noqa: E402

KEPT = ("shape", "position", "background")


def held_out(count: int, colour: str | None = None, avoid_background: str | None = None):
    """(image, attributes) pairs from the shapes validation stream (never trained on)."""
    val = open_dataset(DatasetConfig(num_examples=5000, val_size=4000, image_size=64), "val")
    out = []
    for i in range(len(val)):
        attrs = val.attributes(i)
        if (colour is None or attrs.color == colour) and attrs.background != avoid_background:
            out.append((val[i].image, attrs))
            if len(out) == count:
                break
    return out


def round_trips(pipe, pairs, steps: int) -> dict[str, float]:
    size = pipe.info.sizes["decoder"]
    plan_kw = {"steps": {"decoder": steps}, "output_size": size}
    recon, ends = [], []
    for image, _ in pairs:
        (out,) = pipe.variations(image, n=1, eta=0.0, **plan_kw)
        recon.append(float(psnr(images_to_tensor([out], size), images_to_tensor([image], size))))
    for (a, _), (b, _) in zip(pairs[0::2], pairs[1::2]):
        frames = pipe.interpolate(a, b, steps=2, noise="slerp", sample_steps={"decoder": steps}, output_size=size)
        ends += [float(v) for v in psnr(images_to_tensor(frames, size), images_to_tensor([a, b], size))]
    return {"variation_eta0_psnr_mean": statistics.mean(recon), "variation_eta0_psnr_min": min(recon),
            "interpolation_end_psnr_mean": statistics.mean(ends), "interpolation_end_psnr_min": min(ends)}


def text_diffs(pipe, pairs, thetas: list[float], output_size: int | None, steps: int, direction: str = "text",
               caption: str = "blend", best_of: int = 1, judge=None) -> dict[str, float]:
    frames, targets = [], []
    for image, attrs in pairs:
        target = attrs.replace(color="blue")
        frames += pipe.text_diff(image, canonical_caption(attrs), canonical_caption(target), thetas,
                                 direction=direction, caption=caption, best_of=best_of, steps={"decoder": steps},
                                 output_size=output_size)
        targets += [target] * len(thetas)
    key = f"{direction}/{caption}/best_of={best_of}"
    out = shares(clip_hits(pipe.encoder, frames, targets), thetas, key)
    if judge is not None:
        out.update(shares(clip_hits(judge, frames, targets), thetas, f"judge/{key}"))
    out.update(shares(pixel_hits(images_to_tensor(frames, frames[0].size[0]), targets), thetas, f"pixel/{key}"))
    return out


def shares(hits: list[tuple[bool, bool]], thetas: list[float], key: str) -> dict[str, float]:
    """Per θ, the shares of frames whose colour moved to the target's, that keep the other attributes,
    and both, from each frame's (moved, kept); frames are θ-minor (image 0's thetas, image 1's, ...)."""
    out = {}
    for k, theta in enumerate(thetas):
        rows = hits[k::len(thetas)]
        out[f"{key}/theta={theta:g}/colour_moved"] = sum(m for m, _ in rows) / len(rows)
        out[f"{key}/theta={theta:g}/others_kept"] = sum(kept for _, kept in rows) / len(rows)
        out[f"{key}/theta={theta:g}/both"] = sum(m and kept for m, kept in rows) / len(rows)
    return out


def clip_hits(encoder, frames, targets) -> list[tuple[bool, bool]]:
    """Per frame, whether `encoder` reads its colour as the target's, and whether it keeps the other KEPT
    attributes."""
    embeds = encoder.encode_image(frames)
    colours = [r["color"] for r in predict_attributes(embeds, targets, _embed_text(encoder))]
    # the kept attributes are read among captions of the colour the frame has, so that a frame still
    # red is not judged on how well it matches "a blue ..." captions
    readings = predict_attributes(embeds, [t.replace(color=c) for t, c in zip(targets, colours)], _embed_text(encoder))
    return [(c == t.color, _kept(r, t)) for c, r, t in zip(colours, readings, targets)]


def pixel_hits(images, attrs) -> list[tuple[bool, bool]]:
    """`clip_hits` without any CLIP, for images [N, 3, S, S]: each attribute is the value whose clean
    rendering (data.shapes.probe.render_match) is nearest; the kept ones read with the colour the image has."""
    out = []
    for image, a in zip(images, attrs):
        for colour in [a.color, *(c for c in ATTRIBUTE_VALUES["color"] if c not in (a.color, a.background))]:
            reading = _render_reading(image, a.replace(color=colour))
            if reading["color"]:
                break
        else:  # nearest to no allowed colour: not moved, the rest read with the target's
            colour, reading = None, _render_reading(image, a)
        out.append((colour == a.color, all(reading[k] == 1 for k in KEPT)))
    return out


def _render_reading(image, attrs) -> dict[str, float]:
    return render_match(image[None], [attrs])


def real_kept(encoder, pairs, size: int, key: str = "real") -> dict[str, float]:
    """The share of the images themselves, at `size`, whose shape, position and background CLIP reads right."""
    images = images_to_tensor([image for image, _ in pairs], size)
    attrs = [a for _, a in pairs]
    readings = predict_attributes(encoder.encode_pixels(images), attrs, _embed_text(encoder))
    return {f"{key}/others_kept": sum(_kept(r, t) for r, t in zip(readings, attrs)) / len(pairs)}


def _embed_text(encoder):
    return lambda captions: encoder.encode_text(captions).embeds


def _show(key: str, value, cases: int) -> str:
    """Shares of the red images with their 95% interval, PSNRs in dB, the rest as they are."""
    if isinstance(value, float) and key.endswith(("colour_moved", "others_kept", "both")):
        return format_share(value, cases)
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _kept(reading: dict[str, str], attrs) -> bool:
    return all(reading[a] == getattr(attrs, a) for a in KEPT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser)
    parser.add_argument("--images", type=int, default=16, help="held-out images per measurement (default: 16)")
    parser.add_argument("--steps", type=int, default=50, help="decoder DDIM steps (default: 50)")
    parser.add_argument("--thetas", default="0,0.25,0.5,0.75", help="text-diff θ values (default: 0,0.25,0.5,0.75)")
    parser.add_argument("--prior-thetas", default="0.5,1,1.5",
                        help="θ values of the prior-direction text diffs (default: 0.5,1,1.5)")
    parser.add_argument("--captions", default="blend,none",
                        help="text-diff caption modes to measure (default: blend,none; see unclip/manipulate.py)")
    parser.add_argument("--best-of", default="1,4",
                        help="decodes kept the best of per edited frame, each value measured (default: 1,4; "
                        "see unclip/manipulate.py)")
    parser.add_argument("--judge", help="a second CLIP's model folder (trained apart, e.g. another demo run's) "
                        "that also reads the text diffs, as a check independent of the CLIP that ranks best-of")
    parser.add_argument("--output-size", type=int, default=None, help="text-diff output side (default: decoder's)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.compile = False
    try:
        best_of = [int(b) for b in args.best_of.split(",")]
    except ValueError:
        best_of = [0]
    if any(n < 1 for n in best_of):
        parser.error(f"--best-of must be whole numbers of at least 1 separated by commas, got {args.best_of!r}")
    pipe = load(args)
    pipe.progress = False
    thetas = [float(t) for t in args.thetas.split(",")]
    result = round_trips(pipe, held_out(args.images), args.steps)
    red = held_out(args.images, colour="red", avoid_background="blue")
    size = args.output_size or pipe.info.sizes["decoder"]
    result.update(real_kept(pipe.encoder, red, size))
    real = pixel_hits(images_to_tensor([image for image, _ in red], size), [a for _, a in red])
    result["pixel/real/others_kept"] = sum(k for _, k in real) / len(red)
    judge = load_encoder(ClipSpec.load(args.judge, own_files=True), args.device) if args.judge else None
    if judge is not None:
        result.update(real_kept(judge, red, size, "judge/real"))
    prior_thetas = [float(t) for t in args.prior_thetas.split(",")]
    for caption in args.captions.split(","):
        for n in best_of:
            result.update(text_diffs(pipe, red, thetas, size, args.steps, caption=caption, best_of=n, judge=judge))
            result.update(text_diffs(pipe, red, prior_thetas, size, args.steps, direction="prior", caption=caption,
                                     best_of=n, judge=judge))
    result = {"images": args.images, "decoder_steps": args.steps, "models": pipe.models(), **result}
    for key, value in result.items():
        print(f"{key}: {_show(key, value, len(red))}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
