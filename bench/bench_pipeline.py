"""Latency of one-image text-to-image generation, split per stage, fp32 against bf16 autocast.

    python bench/bench_pipeline.py --models registry                    # the registered champions
    python bench/bench_pipeline.py --models runs/models --repeats 5 --threads 1,2 --json bench.json
    python bench/bench_pipeline.py --tiny                               # smoke run on tiny random models

Variants (precision x thread count) run interleaved, round-robin, in one process after one warm-up
each, so a noisy shared machine slows them alike; the table gives the median seconds per stage and
each variant's total relative to the first. Only bf16 on a CPU with AMX-BF16 (or a GPU) can win.

The comparison with diffusers' deprecated UnCLIPPipeline is bench/bench_vs_diffusers.py: that pipeline
drives only Karlo's layout (a transformers CLIP, a decoder without the demo's draft), so it runs on a
cascade built in that layout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from unclip import UnclipPipeline  # noqa: E402
from unclip.settings import GUIDED, SAMPLED, parse_stage_values  # noqa: E402
from unclip.stages import SamplingPlan  # noqa: E402

PROMPT = "a small red circle in the top left on a white background"


def load(args: argparse.Namespace) -> UnclipPipeline:
    kw = {"device": args.device, "compile": args.compile, "progress": False}
    if args.tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_clips import make_open_clip

        from unclip.testing import build_tiny_models

        root = build_tiny_models(Path(tempfile.mkdtemp(prefix="bench-unclip-")) / "models", make_open_clip)
        return UnclipPipeline.from_models_dir(root, **kw)
    if args.models == "registry":
        return UnclipPipeline.from_registry(args.ref, **kw)
    return UnclipPipeline.from_models_dir(args.models, **kw)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options `load` reads: where the models come from, and the device."""
    parser.add_argument("--models", default="registry", help="'registry' or a folder with clip/ prior/ decoder/ ...")
    parser.add_argument("--ref", default="champion", help="registry alias (default: champion)")
    parser.add_argument("--tiny", action="store_true", help="tiny random models instead (a smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def run_once(pipe: UnclipPipeline, plan: SamplingPlan, seed: int, prior_best_of: int, decoder_best_of: int = 1) -> dict[str, float]:
    import time

    start = time.perf_counter()
    pipe.generate_tensors([PROMPT], 1, seed, plan, prior_best_of=prior_best_of, decoder_best_of=decoder_best_of)
    if pipe.device.type == "cuda":
        torch.cuda.synchronize(pipe.device)
    return {**pipe.timings, "total": time.perf_counter() - start}


def bench(args: argparse.Namespace) -> dict:
    pipe = load(args)
    plan = pipe.plan(parse_stage_values(args.steps, SAMPLED, "steps"),
                     parse_stage_values(args.guidance, GUIDED, "guidance"), args.sampler, args.output_size)
    variants = [(p, t) for p in args.precisions.split(",") for t in args.threads]
    samples: dict[tuple[str, int], list[dict[str, float]]] = {v: [] for v in variants}
    for repeat in range(args.repeats + 1):  # round 0 warms up (allocations, oneDNN kernels, compilation)
        for precision, threads in variants:
            torch.set_num_threads(threads)
            pipe.precision = precision
            timing = run_once(pipe, plan, args.seed + repeat, args.prior_best_of, args.decoder_best_of)
            if repeat:
                samples[(precision, threads)].append(timing)
            print(f"round {repeat} {precision} threads={threads}: {timing['total']:.3f}s", file=sys.stderr)
    stages = ["clip", "prior", *plan.stages, "total"]
    medians = {f"{p}/threads={t}": {s: statistics.median(r[s] for r in runs) for s in stages}
               for (p, t), runs in samples.items()}
    return {"plan": {k: getattr(plan, k) for k in ("steps", "guidance", "sampler", "output_size")},
            "prior_best_of": args.prior_best_of,
            "decoder_best_of": args.decoder_best_of,
            "device": str(pipe.device), "cpu_threads": args.threads, "repeats": args.repeats,
            "models": pipe.models(), "median_seconds": medians}


def table(result: dict) -> str:
    rows = result["median_seconds"]
    names = list(rows)
    stages = list(next(iter(rows.values())))
    base = rows[names[0]]["total"]
    lines = ["| variant | " + " | ".join(stages) + " | total vs first |", "|---" * (len(stages) + 2) + "|"]
    for name in names:
        cells = " | ".join(f"{rows[name][s]:.3f}" for s in stages)
        lines.append(f"| {name} | {cells} | {rows[name]['total'] / base:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser)
    parser.add_argument("--steps", default=None, help="per-stage steps, e.g. prior=25,decoder=25 (default: the pipeline's)")
    parser.add_argument("--guidance", default=None, help="per-stage guidance, e.g. prior=4,decoder=8")
    parser.add_argument("--sampler", default="ddim", help="sampler for every stage (default: ddim)")
    parser.add_argument("--output-size", type=int, default=None, help="output side (default: the largest)")
    parser.add_argument("--prior-best-of", type=int, default=2, help="prior candidates (default: 2)")
    parser.add_argument("--decoder-best-of", type=int, default=1,
                        help="decodes per image (default: 1, the paper's single decode; the pipeline's default is 4)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated (default: fp32,bf16)")
    parser.add_argument("--threads", default=str(torch.get_num_threads()),
                        type=lambda s: [int(x) for x in s.split(",")],
                        help="comma-separated torch CPU thread counts to compare (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (default: 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = bench(args)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
