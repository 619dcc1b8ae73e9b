"""Train one super-resolution stage on random crops of high-res images of any dataset.

    python -m upsamplers.train --stage 1 --preset demo --out runs/upsampler1
    python -m upsamplers.train --stage 2 --preset demo --out runs/upsampler2 --set train.steps=200
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from core.checkpoint import write_json
from core.cli import ArgumentParser, set_threads, thread_count
from core.diffusion import training_scheduler, training_target
from core.trainer import Tracker, fit, make_accelerator
from data import open_dataset
from data.shards import add_counts, prepare_images
from data.skips import skip_metrics
from upsamplers.config import PRESETS, UpsamplerConfig, UpsamplerTrainSettings, settings_for
from upsamplers.evaluate import evaluate_upsampler
from upsamplers.io import save_upsampler
from upsamplers.model import Upsampler
from upsamplers.pairs import pair_batches, to_signed

log = logging.getLogger("upsamplers.train")


def make_loss(cfg: UpsamplerConfig):
    """Diffusion MSE on the high-res crop, conditioned on its degraded, re-upsampled low-res version.
    The noise and timesteps come from the global RNG, which fit() re-seeds before every step."""
    scheduler = training_scheduler(cfg.noise)
    steps = scheduler.config.num_train_timesteps

    def loss_fn(model: torch.nn.Module, batch) -> torch.Tensor:
        high, condition, level = batch
        noise = torch.randn_like(high)
        t = torch.randint(0, steps, (high.shape[0],), device=high.device)
        x_t = scheduler.add_noise(high, noise, t)
        target = training_target(scheduler, high, noise, t)
        return F.mse_loss(model(x_t, t, condition, level).float(), target.float())

    return loss_fn


def make_evaluate(val: torch.Tensor, settings: UpsamplerTrainSettings, images: dict):
    """Evaluation on held-out images; the latest side-by-side image is kept in `images`."""
    def evaluate(model: Upsampler, step: int) -> dict:
        results = evaluate_upsampler(model.float(), val, steps=settings.eval_steps, seeds=range(len(val)))
        images["side_by_side"] = results["side_by_side"]
        return results
    return evaluate


def train_upsampler(settings: UpsamplerTrainSettings, out_dir: str | Path,
                    tracker: Tracker | None = None) -> tuple[Path, dict[str, float]]:
    """Train, evaluate on held-out images and write `out_dir/model` (+ `out_dir/side_by_side.png`:
    low-res | bicubic | model | ground truth). Returns (model folder, metrics)."""
    out_dir = Path(out_dir)
    up, size = settings.upsampler, settings.upsampler.high_res
    acc = make_accelerator(settings.train.mixed_precision)
    sets = {}
    for split, limit in (("train", settings.max_train_images), ("val", settings.eval_size)):
        dataset = open_dataset(settings.data, split)
        sets[split] = prepare_images(dataset, size, out_dir / "images" / split, {"dataset": dataset.fingerprint()},
                                     limit=limit, desc=f"prepare {split}")
    skips = skip_metrics(add_counts(sets["train"].skips, sets["val"].skips))
    if skips.get("data.skipped"):
        log.warning("data: %s", ", ".join(f"{k} {v:g}" for k, v in skips.items()))
    val = to_signed(sets["val"].head(None, ("images",))["images"])

    torch.manual_seed(settings.train.seed)
    model = Upsampler(up)
    train = settings.train
    raw = sets["train"].batches(("images",), train.batch_size, train.seed, settings.buffer_rows,
                                prepare=pair_batches(up, settings.crop_size, train.batch_size, settings.crop_tries))
    images: dict = {}
    result = fit(model, make_loss(up), raw, settings.train, out_dir / "run", run_config=settings,
                 evaluate=make_evaluate(val, settings, images), tracker=tracker, accelerator=acc,
                 desc=f"upsampler {up.stage}")
    folder = out_dir / "model"
    if acc.is_main_process:
        save_upsampler(folder, result.ema.float(), {"train_settings": settings})
        write_json(folder / "metrics.json", {**result.metrics, **skips})
        if "side_by_side" in images:
            images["side_by_side"].save(out_dir / "side_by_side.png")
    acc.wait_for_everyone()
    return folder, {**result.metrics, **skips}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m upsamplers.train", description=__doc__.split("\n")[0])
    parser.add_argument("--stage", type=int, default=1, choices=sorted(PRESETS), help="1: 64→256, 2: 256→1024")
    parser.add_argument("--preset", default="demo", help="smoke, demo, base or paper (default: demo)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/upsampler<stage>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. train.steps=200 or upsampler.sample_steps=8 (repeatable)")
    parser.add_argument("--threads", type=thread_count(), default=None,
                        help="torch CPU threads (1 is often fastest on a shared, busy CPU)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from core.cli import check_output_dir, report, run_cli

    def job():
        settings = settings_for(args.stage, args.preset, args.overrides)
        out = check_output_dir(args.out or f"runs/upsampler{args.stage}")
        folder, metrics = train_upsampler(settings, out)
        report("upsampler", folder, metrics)
    return run_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
