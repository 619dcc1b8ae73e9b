"""Benchmark of the two upsamplers on `shapes`: train the demo presets, then quality and cost.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_upsamplers.py --out runs/bench_upsamplers
    (--steps1 N --steps2 N shorten training on a contended CPU; --reuse skips training when the
    model folders exist)

Quality: PSNR / SSIM / sharpness (RMS-gradient ratio to the truth, 1.0 ideal) of each stage and of
plain bicubic on held-out images (the preset's eval images, sampled with the preset's DDIM steps).
Cost: latency and peak memory for one image at each stage's full output size, fp32 vs bf16
autocast, each measured in a fresh subprocess (peak RSS = VmHWM after resetting it before the call,
and its excess over the RSS before the call); plus stage 2 at 1024×1024 (256→1024) whole vs tiled.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process from /proc, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so the peak covers only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def measure(args) -> None:
    """Child process: one upsample call on one image; prints a JSON line."""
    import torch

    from upsamplers.io import load_upsampler
    from upsamplers.sample import upsample

    torch.set_num_threads(args.threads)
    model = load_upsampler(args.measure)
    low = torch.rand(1, 3, args.low, args.low, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tile = args.tile or 0
    upsample(model, low[..., : model.cfg.model.size_multiple, : model.cfg.model.size_multiple], steps=1)  # warm-up
    reset_peak()
    before = status_mb("VmRSS")
    start = time.perf_counter()
    out = upsample(model, low, steps=args.steps, precision=args.precision, tile=tile)
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM")
    print(json.dumps({"seconds": seconds, "per_step": seconds / args.steps, "peak_rss_mb": peak,
                      "extra_peak_mb": peak - before, "output": list(out.shape)}))


def child(folder: Path, low: int, steps: int, precision: str, threads: int, tile: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--measure", str(folder), "--low", str(low), "--steps", str(steps),
           "--precision", precision, "--threads", str(threads)] + (["--tile", str(tile)] if tile else [])
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"measurement failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def train(stage: int, steps: int | None, out: Path, reuse: bool) -> dict:
    from upsamplers.config import settings_for
    from upsamplers.train import train_upsampler

    folder = out / f"stage{stage}" / "model"
    if reuse and (folder / "metrics.json").is_file():
        saved = json.loads((folder / "train_settings.json").read_text())
        return {"folder": folder, "metrics": json.loads((folder / "metrics.json").read_text()), "train_s": None,
                "steps": saved["train"]["steps"], "batch": saved["train"]["batch_size"]}
    overrides = [f"train.steps={steps}"] if steps else []
    settings = settings_for(stage, "demo", overrides)
    start = time.perf_counter()
    folder, metrics = train_upsampler(settings, out / f"stage{stage}")
    return {"folder": folder, "metrics": metrics, "train_s": time.perf_counter() - start,
            "steps": settings.train.steps, "batch": settings.train.batch_size, "crop": settings.crop_size}


def quality_by_steps(folder: Path, steps: list[int]) -> dict[int, dict[str, float]]:
    """The held-out metrics again at other sampling step counts (same images and seeds)."""
    from data import open_dataset
    from data.transforms import stack_pixels
    from upsamplers.config import UpsamplerTrainSettings
    from upsamplers.evaluate import evaluate_upsampler
    from upsamplers.io import load_upsampler
    from upsamplers.pairs import to_signed

    settings = UpsamplerTrainSettings.parse(json.loads((folder / "train_settings.json").read_text()))
    val = to_signed(stack_pixels(open_dataset(settings.data, "val"), settings.upsampler.high_res, settings.eval_size))
    model = load_upsampler(folder)
    found = {}
    for k in steps:
        metrics = evaluate_upsampler(model, val, steps=k, seeds=range(len(val)))
        found[k] = {key: value for key, value in metrics.items() if isinstance(value, float)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench_upsamplers")
    parser.add_argument("--steps1", type=int, default=None, help="stage-1 training steps (default: the preset's)")
    parser.add_argument("--steps2", type=int, default=None, help="stage-2 training steps (default: the preset's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a contended CPU)")
    parser.add_argument("--reuse", action="store_true", help="reuse trained models found under --out")
    parser.add_argument("--sweep-steps", default="1,2", help="also evaluate at these sampling steps ('' for none)")
    parser.add_argument("--bf16-steps", type=int, default=1, help="sampling steps timed under bf16 (slow on CPUs)")
    parser.add_argument("--bf16-max-side", type=int, default=128, help="largest output side timed under bf16")
    # child-process mode
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--low", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(args)

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()
    report: dict = {"threads": args.threads, "stages": {}}
    for stage, steps in ((1, args.steps1), (2, args.steps2)):
        trained = train(stage, steps, out, args.reuse)
        cfg = json.loads((trained["folder"] / "upsampler_config.json").read_text())
        row = {k: v for k, v in trained.items() if k != "folder"}
        row.update(low=cfg["low_res"], high=cfg["high_res"], sample_steps=cfg["sample_steps"])
        sweep = [int(k) for k in args.sweep_steps.split(",") if k and int(k) != cfg["sample_steps"]]
        row["quality_by_steps"] = {cfg["sample_steps"]: trained["metrics"], **quality_by_steps(trained["folder"], sweep)}
        fp32 = child(trained["folder"], cfg["low_res"], cfg["sample_steps"], "fp32", args.threads)
        # bf16 autocast is ~100x slower on a CPU without bf16 units: above --bf16-max-side it is timed
        # (with fp32 beside it) on a smaller image, and the per-step ratio is applied to the full size
        low = min(cfg["low_res"], args.bf16_max_side // (cfg["high_res"] // cfg["low_res"]))
        bf16 = child(trained["folder"], low, args.bf16_steps, "bf16", args.threads)
        same = fp32 if low == cfg["low_res"] else child(trained["folder"], low, args.bf16_steps, "fp32", args.threads)
        ratio = bf16["per_step"] / same["per_step"]
        row["latency"] = {"fp32": fp32, "bf16": bf16, "fp32_at_bf16_size": same, "bf16_over_fp32_per_step": ratio,
                          "bf16_per_step_full_size_estimate": ratio * fp32["per_step"]}
        if stage == 2:
            whole = child(trained["folder"], 256, 1, "fp32", args.threads)
            tiled = child(trained["folder"], 256, 1, "fp32", args.threads, tile=512)
            row["at_1024"] = {"whole": whole, "tiled_512": tiled}
        report["stages"][stage] = row
        print(json.dumps({stage: row}, indent=1, default=str), flush=True)
    report["total_s"] = time.perf_counter() - started
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print_table(report)


def print_table(report: dict) -> None:
    print(f"\nthreads {report['threads']}, total {report['total_s']:.0f} s")
    for stage, row in report["stages"].items():
        m, lat = row["metrics"], row["latency"]
        train_s = f"{row['train_s']:.0f} s" if row.get("train_s") else "reused"
        print(f"stage {stage} {row['low']}→{row['high']} (train {row.get('steps', '?')} steps, {train_s})")
        print(f"  bicubic:          PSNR {m['bicubic_psnr']:6.2f}  SSIM {m['bicubic_ssim']:.3f}  "
              f"sharpness {m['bicubic_sharpness']:.3f}")
        for k, q in sorted(row["quality_by_steps"].items(), key=lambda kv: int(kv[0])):
            print(f"  model, {int(k):2d} steps:  PSNR {q['psnr']:6.2f}  SSIM {q['ssim']:.3f}  sharpness {q['sharpness']:.3f}")
        print(f"  fp32: {lat['fp32']['seconds']:.2f} s for {row['sample_steps']} steps "
              f"({lat['fp32']['per_step']:.2f} s/step), peak RSS {lat['fp32']['peak_rss_mb']:.0f} MB "
              f"(+{lat['fp32']['extra_peak_mb']:.0f} MB in the call)")
        side = lat["bf16"]["output"][-1]
        print(f"  bf16 (timed at {side}x{side}): {lat['bf16']['per_step']:.2f} s/step = {lat['bf16_over_fp32_per_step']:.1f}x "
              f"fp32 at that size; full size ≈ {lat['bf16_per_step_full_size_estimate']:.1f} s/step; "
              f"peak RSS {lat['bf16']['peak_rss_mb']:.0f} MB (+{lat['bf16']['extra_peak_mb']:.0f} MB)")
        if "at_1024" in row:
            for name, r in row["at_1024"].items():
                print(f"  1024×1024 {name}: {r['per_step']:.2f} s/step, peak RSS {r['peak_rss_mb']:.0f} MB "
                      f"(+{r['extra_peak_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
