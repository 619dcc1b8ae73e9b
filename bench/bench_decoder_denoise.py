"""Where a trained decoder loses what CLIP reads: its draft, its one-step clean-image estimate at each noise level, decoding from the draft.

    python bench/bench_decoder_denoise.py --decoder runs/decoder/<id>/model --val-shards runs/shards/<id>/val
    python bench/bench_decoder_denoise.py ... --images 300 --timesteps 2,10,40,80 --from-draft 40,120,300 --json F

Each row is read by the shards' CLIP (zero-shot accuracy per attribute on shapes captions, with the
CLIP-free pixel check of the shape beside it), on the first `--images` held-out examples:
- real: the images themselves, at the decoder's resolution (the ceiling);
- decoded: decoded from their true embeddings and captions (DDIM, guidance 1, as the decoder's evaluation);
- draft: the draft MLP's image, where the decoder has one;
- x0 @ t: the decoder's one-step clean-image estimate from the real images noised to t, with its mean
  squared error against them beside the error of the noisy input itself ((σ/α)²): a denoiser that
  keeps what CLIP reads stays near the real row at low t;
- noisy @ t: the noisy input divided by α, read as it is;
- from draft @ t: decoded from the draft noised to t instead of from pure noise (SDEdit): how much the
  U-Net's sampling changes what its draft drew;
- best of k: k decodes per embedding, the one the shards' CLIP reads closest to it kept (`decoder.best_of`).

`--judge` names a second CLIP (a model folder trained apart, e.g. another demo run's): its zero-shot
reading of the shape is added to every row, so a gain of the best-of rows that comes only from
ranking with the same CLIP that reads them shows as a gap between the two.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clip.encoder import load_encoder  # noqa: E402
from clip.spec import ClipSpec, check_same_clip  # noqa: E402
from core.candidates import pick_best  # noqa: E402
from core.cli import run_cli  # noqa: E402
from core.diffusion import (  # noqa: E402
    initial_noise,
    sample,
    sampling_scheduler,  # noqa: E402
)
from core.errors import ConfigError  # noqa: E402
from core.metrics import format_share  # noqa: E402
from data.shapes.probe import ShapesProbe  # noqa: E402
from decoder.best_of import decode_best_of  # noqa: E402
from decoder.evaluate import caption_of, to_signed  # noqa: E402
from decoder.io import load_decoder  # noqa: E402
from decoder.sample import conditions, denoiser  # noqa: E402
from decoder.train import load_split  # noqa: E402

ATTRIBUTES = ("color", "shape", "size", "position", "background")


def parse_steps(text: str, train_steps: int, option: str) -> list[int]:
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} must be whole timesteps separated by commas, got {text!r}") from None
    wrong = [t for t in steps if not 0 <= t < train_steps]
    if wrong:
        raise ConfigError(f"{option}: timesteps {wrong} are outside this decoder's schedule (0-{train_steps - 1})")
    return steps


def parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--decoder-best-of must be whole numbers separated by commas, got {text!r}") from None
    if any(k < 1 for k in counts):
        raise ConfigError(f"--decoder-best-of counts must be at least 1, got {text!r}")
    return counts


def readings(images: torch.Tensor, captions: list[str], encoder, judge=None) -> dict[str, float]:
    """Zero-shot accuracy per attribute and the pixel check of the shape, for images in [-1, 1]
    (and the `judge` CLIP's reading of the shape)."""
    images, probe = images.clamp(-1, 1), ShapesProbe()

    def zeroshot(clip) -> dict[str, float]:
        return probe.zeroshot(clip.encode_pixels(images).cpu(), captions, lambda t: clip.encode_text(t).embeds)

    out = {a: v for a, v in zeroshot(encoder).items() if a in ATTRIBUTES}
    out["pixel_shape"] = probe.pixels(images.cpu(), captions)["shape"]
    if judge is not None:
        out["judge_shape"] = zeroshot(judge)["shape"]
    return out


@torch.no_grad()
def measure(decoder, val: dict[str, torch.Tensor], captions: list[str], encoder, timesteps: list[int],
            from_draft: list[int], steps: int, best_of: tuple[int, ...] = (), judge=None) -> dict[str, dict[str, float]]:
    n = len(captions)
    read = functools.partial(readings, captions=captions, encoder=encoder, judge=judge)
    cond = conditions(decoder, val["image_embeds"][:n].float(), caption_of(val, slice(0, n)))
    denoise = denoiser(decoder, cond, 1.0)
    device = cond["image_embeds"].device
    real = to_signed(val["images"][:n]).to(device)
    noise = initial_noise(list(range(n)), tuple(real.shape[1:]), device)
    scheduler = sampling_scheduler(decoder.cfg.noise, "ddim", steps)
    rows = {"real": read(real)}
    rows["decoded"] = read(sample(denoise, scheduler, noise))
    draft = None
    if decoder.draft is not None:
        draft = decoder.draw_draft(cond["image_embeds"], cond["text_embeds"])
        rows["draft"] = read(draft)
    for t in timesteps:
        tt = torch.full((n,), t, device=device, dtype=torch.long)
        x_t = scheduler.add_noise(real, noise, tt)
        x0 = denoise(x_t, tt)
        alpha = float(scheduler.alphas_cumprod[t])
        rows[f"x0 @ t={t}"] = read(x0) | {
            "mse": float((x0.clamp(-1, 1) - real).pow(2).mean()), "input_mse": (1 - alpha) / alpha}
        rows[f"noisy @ t={t}"] = read(x_t / alpha**0.5)
    for t in from_draft:
        shortened = sampling_scheduler(decoder.cfg.noise, "ddim", steps)
        shortened.timesteps = shortened.timesteps[shortened.timesteps <= t]
        start = shortened.timesteps[0]
        x = sample(denoise, shortened, shortened.add_noise(draft, noise, start.expand(n).to(device)))
        rows[f"from draft @ t={int(start)}"] = read(x)
    if best_of:
        best = decode_best_of(decoder, encoder.encode_pixels, cond["image_embeds"], caption_of(val, slice(0, n)),
                              list(range(n)), max(best_of), steps=steps, guidance=1.0, batch_size=100)
        for k in best_of:
            rows[f"best of {k}"] = read(pick_best(best.candidates[:, :k], best.scores[:, :k])[0])
    return rows


def table(rows: dict[str, dict[str, float]], cases: int) -> str:
    shares = (*ATTRIBUTES, "pixel_shape", "judge_shape")
    lines = ["| | " + " | ".join(ATTRIBUTES) + " | pixel check (shape) | judge (shape) | x0 MSE | input MSE |",
             "|---" * (len(shares) + 3) + "|"]
    for name, row in rows.items():
        cells = [format_share(row[a], cases) if a in row else "-" for a in shares]
        cells += [f"{row[k]:.4f}" if k in row else "-" for k in ("mse", "input_mse")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decoder", required=True, help="a trained decoder's model folder")
    parser.add_argument("--val-shards", required=True, help="held-out embedding shards (with images)")
    parser.add_argument("--images", type=int, default=300, help="held-out images (default: 300)")
    parser.add_argument("--timesteps", default="2,10,40,80", help="noise levels of the one-step estimates")
    parser.add_argument("--from-draft", default="", help="noise levels to decode from the noised draft (e.g. 40,120)")
    parser.add_argument("--decoder-best-of", "--best-of", default="", help="candidate counts of best-of decoding to read (e.g. 2,4)")
    parser.add_argument("--judge", help="a second CLIP's model folder, whose reading of the shape is added")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (default: 25)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    def job():
        decoder, spec = load_decoder(args.decoder, device=args.device)
        shards, val, _ = load_split(args.val_shards, decoder.cfg.image_size)
        check_same_clip(spec, shards.spec, f"decoder {args.decoder}")
        train_steps = decoder.cfg.noise.train_steps
        timesteps = parse_steps(args.timesteps, train_steps, "--timesteps")
        from_draft = parse_steps(args.from_draft, train_steps, "--from-draft")
        if from_draft and decoder.draft is None:
            raise ConfigError(f"--from-draft: decoder {args.decoder} has no draft")
        last = int(sampling_scheduler(decoder.cfg.noise, "ddim", args.steps).timesteps[-1])
        if any(t < last for t in from_draft):
            raise ConfigError(f"--from-draft {min(from_draft)} is below the sampler's last step (t = {last} "
                              f"with {args.steps} DDIM steps)")
        best_of = parse_counts(args.decoder_best_of)
        judge = load_encoder(ClipSpec.load(args.judge, own_files=True), args.device) if args.judge else None
        n = min(args.images, len(shards.captions))
        captions = list(shards.captions[:n])
        # the shards name the CLIP's files; the decoder's spec only identifies it (checked above)
        rows = measure(decoder, val, captions, load_encoder(shards.spec, args.device), timesteps, from_draft, args.steps,
                       best_of, judge)
        print(table(rows, n))
        if args.json:
            Path(args.json).write_text(json.dumps({"images": n, "rows": rows}, indent=2) + "\n")
    return run_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
