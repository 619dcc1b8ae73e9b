"""Where the time goes, fp32 against bf16: torch.profiler's per-op table for one sampling call and one
training step of each stage (the networks and inputs of bench/bench_precision.py).

    python bench/profile_precision.py --threads 1                          # every stage, top 10 ops
    python bench/profile_precision.py --only decoder,upsampler2 --top 15 --json ops.json
    python bench/profile_precision.py --only decoder --kernels             # and its kernels, shape by shape

Each table lists the ops with the most self time in either precision, in milliseconds per call (per
sampling run, per training step), beside their share of the total.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import kernel_bound  # noqa: E402
import precision_stages as stages  # noqa: E402

from core.memory import keep_freed_memory  # noqa: E402


def op_times(run, repeats: int = 1) -> dict[str, float]:
    """Self CPU milliseconds per op name for one call of `run` (after a warm-up call)."""
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            run()
    return {e.key: e.self_cpu_time_total / 1000 / repeats for e in prof.key_averages()}


def compare(runs: dict[str, object], top: int) -> dict:
    times = {p: op_times(run) for p, run in runs.items()}
    totals = {p: sum(t.values()) for p, t in times.items()}
    ranked = sorted(set(times["fp32"]) | set(times["bf16"]),
                    key=lambda op: -max(times["fp32"].get(op, 0.0), times["bf16"].get(op, 0.0)))
    return {"total_ms": totals, "ops": {op: {p: times[p].get(op, 0.0) for p in times} for op in ranked[:top]}}


def table(name: str, result: dict) -> str:
    total = result["total_ms"]
    lines = [f"{name}: total {total['fp32']:.1f} ms fp32, {total['bf16']:.1f} ms bf16",
             "| op | fp32 ms | share | bf16 ms | share |", "|---|---|---|---|---|"]
    for op, ms in result["ops"].items():
        lines.append(f"| {op} | {ms['fp32']:.1f} | {100 * ms['fp32'] / total['fp32']:.0f}% | {ms['bf16']:.1f} | "
                     f"{100 * ms['bf16'] / total['bf16']:.0f}% |")
    return "\n".join(lines)


def kernel_table(name: str, rows: list[dict]) -> str:
    lines = [f"{name}: kernels by shape, each replayed alone (bench/kernel_bound.py)",
             "| kernel | operand shapes | calls | fp32 ms | bf16 ms | bf16 speed-up |", "|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["ms"]
        shapes = " ".join("×".join(map(str, s)) for s in r["shapes"])
        lines.append(f"| {r['kernel']} | {shapes} | {r['calls']} | {ms['fp32']:.1f} | {ms['bf16']:.1f} | "
                     f"{ms['fp32'] / max(ms['bf16'], 1e-9):.2f}x |")
    return "\n".join(lines)


def profiles(args) -> dict[str, dict]:
    prior = stages.build_prior(args.tiny)
    decoder, decoder_settings = stages.build_decoder(args.tiny)
    ups = {s: stages.build_upsampler(s, args.tiny) for s in (1, 2)}
    samplings = [stages.prior_sampling(prior, args.images, 25), stages.decoder_sampling(decoder, args.images, 4, 25),
                 stages.upsampler_sampling(ups[1][0], args.images), stages.upsampler_sampling(ups[2][0], 1)]
    trainings = [stages.decoder_training(decoder, decoder_settings, 2),
                 *(stages.upsampler_training(m, s, 2) for m, s in ups.values()),
                 stages.prior_training(prior, 2, 128), stages.clip_training(args.tiny, 2)]
    wanted = set(args.only.split(",")) if args.only else None
    out = {}
    for sampling in samplings:
        if wanted is None or sampling.name in wanted:
            out[f"{sampling.name} sampling"] = compare({p: partial(sampling.run, p) for p in ("fp32", "bf16")},
                                                       args.top)
            if args.kernels:
                calls = kernel_bound.record_precisions(sampling.run)
                out[f"{sampling.name} sampling kernels"] = kernel_bound.per_shape(calls, args.top)
    for training in trainings:
        if wanted is None or training.name in wanted:
            steps = {p: stages.trainer_for(training, p) for p in ("fp32", "bf16")}
            out[f"{training.name} training step"] = compare({p: partial(step, 0) for p, step in steps.items()},
                                                            args.top)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = stages.stage_parser(__doc__.split("\n\n")[0], "stages")
    parser.add_argument("--top", type=int, default=10, help="ops per table (default: 10)")
    parser.add_argument("--kernels", action="store_true",
                        help="also time each sampling stage's matmuls and convolutions alone, shape by shape")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    results = profiles(args)
    print("\n\n".join(kernel_table(name, result) if name.endswith(" kernels") else table(name, result)
                      for name, result in results.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
