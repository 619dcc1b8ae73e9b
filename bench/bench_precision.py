"""bf16 against fp32 on this machine, per stage, beside the hardware's measured matmul peak.

    python bench/bench_precision.py --threads 2 --json speed.json        # every target, demo sizes
    python bench/bench_precision.py --threads 2 --curve-steps 0          # timings only, no loss curves
    python bench/bench_precision.py --tiny --repeats 1 --curve-steps 3   # smoke run on tiny models

Prints, side by side from one run (variants interleaved round-robin, medians: the machine is shared):
- the peak: best GFLOP/s of a 1024² matmul in fp32 and in bf16;
- sampling, each stage at the demo preset (CLIP: one text batch and one image batch encoded): seconds in
  fp32 and bf16, the ratio, achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode) and, for images,
  the PSNR of the bf16 output against the fp32 one from the same seeds;
- a training step of the decoder and both upsamplers (fp32 against bf16 autocast with fp32 master
  weights), from `--curve-steps` steps of each on the same batches and seeds, interleaved, with the mean
  loss of the last quarter of each curve and its standard error;
- what `auto` chooses per stage here;
- the whole pipeline, text to 512 px, against diffusers' UnCLIPPipeline (bench/bench_vs_diffusers.py).

Random networks at the demo preset's sizes (speed does not depend on the weights); images are shapes
renderings. See docs/experiments/speed.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import precision_stages as stages  # noqa: E402

from core.memory import keep_freed_memory  # noqa: E402
from core.precision import bf16_cannot_pay, choices, forget_choices, median_seconds, resolve  # noqa: E402


def matmul_peak(dtype: torch.dtype, n: int = 1024, tries: int = 5) -> float:
    """Best GFLOP/s of an n×n matmul at the current thread count."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(tries):
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * n**3 / best / 1e9


def flops(run) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return counter.get_total_flops()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = float((a.float() - b.float()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


def sampling_figures(sampling: stages.Sampling, repeats: int) -> dict:
    outputs = {p: sampling.run(p) for p in ("fp32", "bf16")}  # also warms both up
    seconds = median_seconds({p: lambda p=p: sampling.run(p) for p in ("fp32", "bf16")}, rounds=repeats, warmup=0)
    work = flops(lambda: sampling.run("fp32"))
    row = {"rows": sampling.rows, "seconds": seconds, "ratio": seconds["fp32"] / seconds["bf16"],
           "gflops": {p: work / s / 1e9 for p, s in seconds.items()}}
    row["kernels"] = kernel_figures(sampling.run, seconds["fp32"], repeats)
    if sampling.images:
        row["psnr_db"] = psnr(outputs["bf16"], outputs["fp32"])
    else:
        row["cosine_min"] = float(torch.nn.functional.cosine_similarity(outputs["bf16"], outputs["fp32"]).min())
    return row


def kernel_figures(run, stage_fp32_seconds: float, repeats: int) -> dict:
    """The stage's matmuls and convolutions alone, each precision's own (bench/kernel_bound.py): their
    bf16 speed-up is the most bf16 can give this stage here; `share` is their part of the fp32 stage."""
    import kernel_bound

    calls = kernel_bound.record_precisions(run)
    replays = {p: kernel_bound.replayer(c) for p, c in calls.items()}
    seconds = median_seconds(replays, rounds=max(2, repeats))
    return {"seconds": seconds, "ratio": seconds["fp32"] / seconds["bf16"], "calls": len(calls["fp32"]),
            "share": seconds["fp32"] / stage_fp32_seconds}


def clip_figures(tiny: bool, images: int, repeats: int) -> dict:
    """Encoding captions and images with the demo CLIP, fp32 against bf16 (ClipEncoder's dtype)."""
    from clip.encoder import load_encoder

    spec = demo_clip(Path(tempfile.mkdtemp(prefix="bench-precision-clip-")), tiny)
    encoders = {p: load_encoder(spec, "cpu", dtype) for p, dtype in (("fp32", torch.float32),
                                                                     ("bf16", torch.bfloat16))}
    captions = ["a small red circle in the top left on a white background"] * images
    pixels = stages.to_signed(stages.shapes_images(4 * images, 32))

    def run(p):
        return encoders[p].encode_text(captions).embeds, encoders[p].encode_pixels(pixels)

    for p in encoders:
        run(p)
    seconds = median_seconds({p: lambda p=p: run(p) for p in encoders}, rounds=repeats, warmup=0)
    work = flops(lambda: run("fp32"))
    text32, image32 = run("fp32")
    text16, image16 = run("bf16")
    cos = torch.nn.functional.cosine_similarity
    return {"rows": f"{images} captions + {4 * images} images", "seconds": seconds,
            "ratio": seconds["fp32"] / seconds["bf16"], "gflops": {p: work / s / 1e9 for p, s in seconds.items()},
            "kernels": kernel_figures(run, seconds["fp32"], repeats),
            "cosine_min": float(torch.cat([cos(text32, text16), cos(image32, image16)]).min())}


def demo_clip(folder: Path, tiny: bool):
    from clip.config import model_preset
    from clip.encoder import resolve_spec
    from core.checkpoint import save_model_folder

    cfg = model_preset("smoke" if tiny else "demo")
    torch.manual_seed(0)
    save_model_folder(folder, cfg.build().eval(), {"open_clip_config": cfg.open_clip_config()})
    return resolve_spec("open_clip", folder / "open_clip_config.json", folder / "model.safetensors")


def training_figures(training: stages.Training, steps: int) -> dict:
    """`steps` steps in each precision, interleaved; step 0 warms up (not timed)."""
    runs = {p: stages.trainer_for(training, p) for p in ("fp32", "bf16")}
    losses: dict[str, list[float]] = {p: [] for p in runs}
    times: dict[str, list[float]] = {p: [] for p in runs}
    for i in range(steps + 1):
        for p, step in runs.items():
            start = time.perf_counter()
            loss = step(i)
            if i:
                times[p].append(time.perf_counter() - start)
                losses[p].append(loss)
    seconds = {p: statistics.median(t) for p, t in times.items()}
    tail = max(1, steps // 4)
    last = {p: statistics.fmean(v[-tail:]) for p, v in losses.items()}
    error = {p: statistics.stdev(v[-tail:]) / math.sqrt(tail) if tail > 1 else math.nan for p, v in losses.items()}
    first = training.batches[0]
    return {"batch": len(next(iter(first.values())) if isinstance(first, dict) else first[0]), "steps": steps, "seconds": seconds,
            "ratio": seconds["fp32"] / seconds["bf16"], "last_quarter_loss": last, "standard_error": error,
            "losses": losses}


def bench(args: argparse.Namespace) -> dict:
    keep_freed_memory()  # as training and the pipeline do
    forget_choices()
    report: dict = {"threads": torch.get_num_threads(), "tiny": args.tiny,
                    "peak_gflops": {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)},
                    "auto_kernel_check": bf16_cannot_pay("cpu") or "bf16 may pay: auto times each stage"}
    wanted = set(args.only.split(",")) if args.only else None
    report["sampling"] = {}
    if wanted is None or "clip" in wanted:
        report["sampling"]["clip"] = clip_figures(args.tiny, args.images, args.repeats)
    prior = stages.build_prior(args.tiny)
    decoder, decoder_settings = stages.build_decoder(args.tiny)
    ups = {s: stages.build_upsampler(s, args.tiny) for s in (1, 2)}
    samplings = [stages.prior_sampling(prior, args.images, args.prior_steps),
                 stages.decoder_sampling(decoder, args.images, args.decoder_best_of, args.decoder_steps),
                 stages.upsampler_sampling(ups[1][0], args.images),
                 stages.upsampler_sampling(ups[2][0], args.upsampler2_images)]
    for sampling in samplings:
        if wanted is not None and sampling.name not in wanted:
            continue
        report["sampling"][sampling.name] = sampling_figures(sampling, args.repeats)
        sampling.run("auto")  # what auto picks for this call (core.precision remembers it)
        print(f"sampled {sampling.name}", file=sys.stderr, flush=True)
    steps = max(2, args.curve_steps)
    count = min(steps, 64)
    trainings = [stages.decoder_training(decoder, decoder_settings, count),
                 *(stages.upsampler_training(model, settings, count) for model, settings in ups.values()),
                 stages.prior_training(prior, count, 16 if args.tiny else 128), stages.clip_training(args.tiny, count)]
    report["training"] = {}
    for training in trainings:
        if wanted is not None and training.name not in wanted:
            continue
        report["training"][training.name] = training_figures(training, steps)
        probes = {p: stages.trainer_for(training, p) for p in ("fp32", "bf16")}
        resolve("auto", f"{training.name} training", "cpu", lambda p, probes=probes: probes[p](0))
        print(f"trained {training.name}", file=sys.stderr, flush=True)
    report["auto"] = auto_choices()
    if not args.skip_pipeline:
        import bench_vs_diffusers

        forget_choices()
        report["pipeline"] = bench_vs_diffusers.bench_cascade(args.repeats, tiny=args.tiny)
        report["pipeline"]["auto"] = auto_choices()
    return report


def auto_choices() -> dict[str, dict]:
    """What `auto` chose in this process, per stage (the probe's median seconds beside it)."""
    return {key[0]: {"choice": choice, "seconds": seconds} for key, (choice, seconds) in choices().items()}


def table(report: dict) -> str:
    peak = report["peak_gflops"]
    lines = [f"machine peak (1024² matmul, {report['threads']} threads): fp32 {peak['fp32']:.0f} GFLOP/s, "
             f"bf16 {peak['bf16']:.0f} GFLOP/s", "",
             "| sampling | rows | fp32 s | bf16 s | bf16 speed-up | its kernels alone: bf16 speed-up (share of fp32) | "
             "GFLOP/s fp32 / bf16 | % of peak fp32 / bf16 | bf16 vs fp32 output |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in report["sampling"].items():
        g = row["gflops"]
        same = f"PSNR {row['psnr_db']:.1f} dB" if "psnr_db" in row else f"cosine ≥ {row['cosine_min']:.5f}"
        lines.append(f"| {name} | {row['rows']} | {row['seconds']['fp32']:.3f} | {row['seconds']['bf16']:.3f} | "
                     f"{row['ratio']:.2f}x | {row['kernels']['ratio']:.2f}x ({100 * row['kernels']['share']:.0f}%) | "
                     f"{g['fp32']:.1f} / {g['bf16']:.1f} | "
                     f"{100 * g['fp32'] / peak['fp32']:.0f}% / {100 * g['bf16'] / peak['bf16']:.0f}% | {same} |")
    lines += ["", "| training step | batch | fp32 s | bf16 s | bf16 speed-up | last-quarter loss fp32 / bf16 (± s.e.) |",
              "|---|---|---|---|---|---|"]
    for name, row in report["training"].items():
        loss, err = row["last_quarter_loss"], row["standard_error"]
        lines.append(f"| {name} | {row['batch']} | {row['seconds']['fp32']:.3f} | {row['seconds']['bf16']:.3f} | "
                     f"{row['ratio']:.2f}x | {loss['fp32']:.4f} ± {err['fp32']:.4f} / "
                     f"{loss['bf16']:.4f} ± {err['bf16']:.4f} ({row['steps']} steps) |")
    lines += ["", f"auto's hardware check: {report['auto_kernel_check']}",
              "auto chose: " + "; ".join(f"{k} -> {v['choice']}" for k, v in report["auto"].items())]
    if "pipeline" in report:
        import bench_vs_diffusers

        lines += ["", bench_vs_diffusers.cascade_table(report["pipeline"]),
                  "auto chose in the pipeline: " + "; ".join(f"{k} -> {v['choice']}"
                                                             for k, v in report["pipeline"]["auto"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = stages.stage_parser(__doc__.split("\n\n")[0], "stages to measure")
    parser.add_argument("--upsampler2-images", type=int, default=1, help="images per 512 px upsampling call")
    parser.add_argument("--decoder-best-of", type=int, default=4, help="decodes per image (the pipeline's 4)")
    parser.add_argument("--prior-steps", type=int, default=25)
    parser.add_argument("--decoder-steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per sampling variant (default: 3)")
    parser.add_argument("--curve-steps", type=int, default=200,
                        help="training steps per precision and stage, interleaved (default: 200; 0: 2 steps)")
    parser.add_argument("--skip-pipeline", action="store_true", help="leave out the comparison with diffusers")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = bench(args)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
