"""Decoder benchmark: train the demo preset on real shards, evaluate it, time training and sampling.

    python bench/bench_decoder.py --shards /tmp/unclip-bench/shards/train --val-shards /tmp/unclip-bench/shards/val \
        --out /tmp/unclip-bench/decoder --json /tmp/unclip-bench/decoder.json
    python bench/bench_decoder.py ... --skip-train          # reuse OUT/model, only evaluate and time
    python bench/bench_decoder.py ... --set train.steps=500 --threads 1
    python bench/bench_decoder.py ... --skip-train --device cuda   # evaluate and time a trained one on a GPU

Reports: training wall time; the evaluation (CLIP consistency beside real images, zero-shot accuracy
per attribute, DDIM-inversion PSNR at 50 steps; grid in OUT/bench_grid.png) at several guidance
scales; training throughput fp32 against bf16 autocast (interleaved rounds, medians: the machine is
shared); sampling latency per image at 25 and 50 DDIM steps with and without guidance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clip.encoder import load_encoder  # noqa: E402
from core.metrics import format_share  # noqa: E402
from core.trainer import tensor_batches  # noqa: E402
from decoder.config import settings_for  # noqa: E402
from decoder.evaluate import evaluate_decoder  # noqa: E402
from decoder.io import load_decoder  # noqa: E402
from decoder.model import CONDITIONS, Decoder  # noqa: E402
from decoder.sample import Caption, decode  # noqa: E402
from decoder.train import load_split, make_loss, train_decoder  # noqa: E402


def train(args, settings) -> float:
    start = time.perf_counter()
    train_decoder(settings, args.shards, args.out)
    return time.perf_counter() - start


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer read after it counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(args, settings, decoder) -> dict:
    shards, val, real = load_split(args.val_shards, decoder.cfg.image_size)
    encoder = load_encoder(shards.spec, args.device)
    results = {}
    for guidance in args.guidance:
        start = time.perf_counter()
        eval_cfg = settings.eval.override(guidance=guidance, grid=16)
        metrics = evaluate_decoder(decoder, val, real, shards.captions, encoder, eval_cfg)
        metrics["seconds"] = time.perf_counter() - start
        grid = metrics.pop("sample_grid")
        grid.save(Path(args.out) / f"bench_grid_g{guidance:g}.png")
        results[f"guidance={guidance:g}"] = metrics
        cases = min(eval_cfg.size, val["image_embeds"].shape[0])
        print(f"guidance {guidance:g}: " + ", ".join(f"{k} {_show(k, v, cases)}" for k, v in sorted(metrics.items())),
              flush=True)
    return results


def _show(key: str, value: float, cases: int) -> str:
    """Attribute accuracies with their 95% interval over the decoded images, the rest to 3 decimals."""
    return format_share(value, cases) if key.startswith(("zeroshot", "render_match")) else f"{value:.3f}"


def throughput(args, settings, data) -> dict:
    """Training images/s of a fresh demo decoder, fp32 against bf16 autocast, interleaved rounds."""
    cfg = settings.decoder.for_clip(data["image_embeds"].shape[1], data["text_tokens"].shape[2])
    loss_fn = make_loss(settings)
    first = next(iter(tensor_batches(data, settings.train.batch_size, 0)(0, 0, 1)))
    batch = {k: v.to(args.device) for k, v in first.items()}
    variants = {p: Decoder(cfg).to(args.device).train() for p in args.precisions}
    optims = {p: torch.optim.AdamW(m.parameters(), lr=1e-4) for p, m in variants.items()}
    if settings.channels_last:
        variants = {p: m.to(memory_format=torch.channels_last) for p, m in variants.items()}
    rates: dict[str, list[float]] = {p: [] for p in variants}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for precision, model in variants.items():
            synchronize(args.device)
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = loss_fn(model, batch)
                loss.backward()
                optims[precision].step()
                optims[precision].zero_grad(set_to_none=True)
            synchronize(args.device)
            if round_:
                rates[precision].append(args.steps_per_round * len(batch["images"]) / (time.perf_counter() - start))
    return {p: statistics.median(r) for p, r in rates.items()}


def latency(args, decoder, data) -> dict:
    """Seconds per image (batch of args.latency_batch) at 25/50 DDIM steps, guidance 1 (off) and on."""
    n = args.latency_batch
    text = Caption(data["text_embeds"][:n], data["text_tokens"][:n], data["text_mask"][:n])
    out = {}
    decode(decoder, data["image_embeds"][:n], text, list(range(n)), steps=2)  # warm-up
    for steps in (25, 50):
        for guidance in (1.0, args.guidance[-1]):
            runs = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                decode(decoder, data["image_embeds"][:n], text, list(range(n)), steps=steps, guidance=guidance)
                synchronize(args.device)
                runs.append((time.perf_counter() - start) / n)
            out[f"steps={steps},guidance={guidance:g}"] = statistics.median(runs)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", required=True)
    parser.add_argument("--val-shards", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--latency-batch", type=int, default=8)
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", type=torch.device, default="cpu", help="where to evaluate and time (cpu, cuda)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_for(args.preset, args.overrides)
    report: dict = {"preset": args.preset, "overrides": args.overrides, "threads": torch.get_num_threads(),
                    "device": str(args.device)}
    if not args.skip_train:
        report["train_seconds"] = train(args, settings)
        print(f"trained in {report['train_seconds'] / 60:.1f} min", flush=True)
    decoder, _ = load_decoder(Path(args.out) / "model", device=args.device)
    report["parameters_millions"] = sum(p.numel() for p in decoder.parameters()) / 1e6
    report["eval"] = evaluate(args, settings, decoder)
    _, data, _ = load_split(args.shards, decoder.cfg.image_size)
    data = {k: data[k][:256] for k in (*CONDITIONS, "images")}
    report["train_images_per_s"] = throughput(args, settings, data)
    print(f"throughput {report['train_images_per_s']}", flush=True)
    report["seconds_per_image"] = latency(args, decoder, data)
    print(f"latency {report['seconds_per_image']}", flush=True)
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
