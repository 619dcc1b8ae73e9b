"""Benchmark of the diffusion prior on real embedding shards (the issue's targets).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_prior.py --shards /tmp/unclip-bench/shards/train \
        --val-shards /tmp/unclip-bench/shards/val --out /tmp/prior-bench [--preset demo] [--set k=v ...]

1. trains the preset with `prior.train.train_prior` (wall time, samples/s from the loop) and
   evaluates the EMA weights against the text-embedding baseline (+ zero-shot on shapes);
2. measures training throughput fp32 vs bf16 autocast, side by side (alternating short runs);
3. measures sampling latency per caption fp32 vs bf16 autocast, side by side, and how far the
   bf16 samples are from the fp32 ones.
Timings on a shared CPU swing a lot: compare the ratios, which come from interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from clip.shards import EmbeddingShards
from core.trainer import tensor_batches
from prior.evaluate import HeldOut
from prior.io import load_prior
from prior.sample import sample_prior
from prior.train import FIELDS, make_loss, settings_for, train_prior, training_tensors


class RateTracker:
    """Keeps what the training loop logs."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step) -> None:
        self.rows.append((step, dict(metrics)))

    def log_image(self, image, name, step) -> None:
        pass


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()


def train_throughput(prior, data, settings, steps: int, rounds: int, bf16: bool = True) -> dict[str, float]:
    """Samples/s of forward+backward+AdamW on the shards' batches, fp32 and bf16 interleaved."""
    prior = prior.train()
    loss_fn = make_loss(settings.prior.noise, settings.prior.cond_drop)
    batch_size = settings.train.batch_size
    batches = tensor_batches(data, batch_size, 0)(0, 0, 1)
    optimizer = torch.optim.AdamW([p for p in prior.parameters() if p.requires_grad], lr=1e-5)
    seconds = {"fp32": 0.0, "bf16": 0.0}

    def run(bf16: bool, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            batch = next(batches)
            with autocast(bf16):
                loss = loss_fn(prior, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    kinds = ("fp32", "bf16") if bf16 else ("fp32",)
    for name in kinds:  # warm-up
        run(name == "bf16", 1)
    for _ in range(rounds):
        for name in kinds:
            seconds[name] += run(name == "bf16", steps)
    rate = {name: rounds * steps * batch_size / seconds[name] for name in kinds}
    if not bf16:
        return {"train_samples_per_s_fp32": rate["fp32"]}
    return {"train_samples_per_s_fp32": rate["fp32"], "train_samples_per_s_bf16": rate["bf16"],
            "train_bf16_speedup": rate["bf16"] / rate["fp32"]}


def sampling_latency(prior, held: HeldOut, captions: int, steps: int, best_of: int, rounds: int) -> dict[str, float]:
    text = HeldOut(held.image_embeds[:captions], held.text_embeds[:captions], held.tokens[:captions],
                   held.mask[:captions], held.captions[:captions])
    seeds = list(range(captions))
    seconds, out = {"fp32": 0.0, "bf16": 0.0}, {}

    def run(bf16: bool):
        start = time.perf_counter()
        with autocast(bf16):
            z = sample_prior(prior, text, seeds, steps=steps, best_of=best_of)
        return time.perf_counter() - start, z

    run(False), run(True)  # warm-up
    for _ in range(rounds):
        for name in ("fp32", "bf16"):
            dt, out[name] = run(name == "bf16")
            seconds[name] += dt
    per = {name: 1000 * s / (rounds * captions) for name, s in seconds.items()}
    agree = float((out["fp32"] * out["bf16"]).sum(-1).mean())
    return {"sample_ms_per_caption_fp32": per["fp32"], "sample_ms_per_caption_bf16": per["bf16"],
            "sample_bf16_speedup": per["fp32"] / per["bf16"], "sample_cos_bf16_vs_fp32": agree,
            "sample_steps": steps, "sample_best_of": best_of, "sample_captions": captions}


def steps_sweep(prior, held: HeldOut, settings, counts=(4, 8, 16, 32, 64)) -> dict[str, float]:
    """cos(pred, true image) and retrieval by sampler and step count, on the same captions and seeds."""
    from prior.evaluate import embedding_metrics

    out = {}
    for sampler in ("ddim", "dpmpp"):
        for steps in counts:
            z = sample_prior(prior, held, range(len(held.captions)), steps=steps, sampler=sampler,
                             best_of=settings.eval.prior_best_of)
            m = embedding_metrics(z, held.image_embeds, held.text_embeds)
            out[f"{sampler}{steps}_cos_pred_image"] = m["cos_pred_image"]
            out[f"{sampler}{steps}_retrieval_top1"] = m["retrieval_top1"]
    return out


def thread_throughput(prior, data, settings, steps: int, rounds: int) -> dict[str, float]:
    """fp32 training samples/s with 1 and 2 torch threads, interleaved (contention makes a difference)."""
    before = torch.get_num_threads()
    out = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out[f"train_samples_per_s_fp32_{n}_threads"] = train_throughput(
                prior, data, settings, steps, rounds, bf16=False)["train_samples_per_s_fp32"]
    finally:
        torch.set_num_threads(before)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", required=True)
    parser.add_argument("--val-shards", required=True)
    parser.add_argument("--out", default="/tmp/prior-bench")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-train", action="store_true", help="reuse OUT/model from an earlier run")
    parser.add_argument("--speed-steps", type=int, default=5, help="steps per timed training round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved fp32/bf16 rounds")
    parser.add_argument("--captions", type=int, default=64, help="captions per timed sampling run")
    parser.add_argument("--sweep", type=int, default=300, help="captions for the sampler/steps sweep (0: none)")
    parser.add_argument("--compare-threads", action="store_true", help="also time fp32 training on 1 and 2 threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    settings = settings_for(args.preset, args.overrides)
    report: dict = {"preset": args.preset, "overrides": args.overrides, "threads": torch.get_num_threads()}

    if not args.skip_train:
        tracker = RateTracker()
        start = time.perf_counter()
        _, metrics = train_prior(settings, args.shards, out, tracker=tracker, val_shards_dir=args.val_shards)
        report["train_wall_s_incl_eval"] = time.perf_counter() - start
        rates = [m["samples_per_s"] for _, m in tracker.rows if "samples_per_s" in m]
        report["train_samples_per_s_loop"] = sum(rates) / max(1, len(rates))
        report["loss_curve"] = [(s, round(m["loss"], 5)) for s, m in tracker.rows if "loss" in m]
        report["metrics"] = metrics
        print(json.dumps(report, indent=1), flush=True)

    shards, val = EmbeddingShards.open(args.shards), EmbeddingShards.open(args.val_shards)
    prior = load_prior(out / "model", expected_spec=shards.spec)
    settings = settings.override(prior=prior.config)
    held = HeldOut.from_tensors(val.load(FIELDS), val.captions, max(args.captions, args.sweep))
    if args.sweep:
        sweep_set = HeldOut.from_tensors(val.load(FIELDS), val.captions, args.sweep)
        report["steps_sweep"] = steps_sweep(prior, sweep_set, settings)
        print(json.dumps(report["steps_sweep"], indent=1), flush=True)
    report.update(sampling_latency(prior, held, args.captions, settings.eval.steps, settings.eval.prior_best_of,
                                   args.rounds))
    data = training_tensors(prior, shards.load(FIELDS))
    report.update(train_throughput(prior, data, settings, args.speed_steps, args.rounds))
    if args.compare_threads:
        report.update(thread_throughput(prior, data, settings, args.speed_steps, args.rounds))
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "loss_curve"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
