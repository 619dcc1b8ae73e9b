"""Train one super-resolution stage on random crops of high-res images of any dataset.

    python -m upsamplers.train --stage 1 --preset demo --out runs/upsampler1
    python -m upsamplers.train --stage 2 --preset demo --out runs/upsampler2 --set train.steps=200
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from core.checkpoint import write_json
from core.cli import run_training, training_parser
from core.diffusion import diffusion_loss, training_scheduler
from core.errors import ConfigError
from core.init_from import parent_metrics, start_from
from core.trainer import Tracker, fit, make_accelerator
from data import open_dataset
from data.shards import add_counts, prepare_images
from data.skips import skip_metrics
from upsamplers.config import PRESETS, UpsamplerConfig, UpsamplerTrainSettings, settings_for, with_data_size
from upsamplers.evaluate import evaluate_upsampler
from upsamplers.io import load_upsampler, save_upsampler
from upsamplers.model import Upsampler
from upsamplers.pairs import pair_batches, to_signed

log = logging.getLogger("upsamplers.train")


def make_loss(cfg: UpsamplerConfig, channels_last: bool = False):
    """core.diffusion's loss on the high-res crop, conditioned on its degraded, re-upsampled low-res version."""
    scheduler = training_scheduler(cfg.noise)
    memory = torch.channels_last if channels_last else torch.contiguous_format

    def loss_fn(model: torch.nn.Module, batch) -> torch.Tensor:
        high, condition, level = batch
        high, condition = high.contiguous(memory_format=memory), condition.contiguous(memory_format=memory)
        return diffusion_loss(scheduler, high, lambda x_t, t: model(x_t, t, condition, level),
                              learned_variance=cfg.model.learned_variance)

    return loss_fn


def make_evaluate(val: torch.Tensor, settings: UpsamplerTrainSettings, images: dict):
    """Evaluation on held-out images; the latest side-by-side image is kept in `images`."""
    def evaluate(model: Upsampler, step: int) -> dict:
        results = evaluate_upsampler(model.float(), val, steps=settings.eval_steps, seeds=range(len(val)))
        images["side_by_side"] = results["side_by_side"]
        return results
    return evaluate


def build_upsampler(settings: UpsamplerTrainSettings, init_from: str | Path | None = None) -> Upsampler:
    """A new upsampler, or the one in `init_from`; a final-step U-Net stays as it came (frozen)."""
    if init_from is None:
        if settings.upsampler.model.final_step_unet:
            raise ConfigError("upsampler.model.final_step_unet is a second, GAN-tuned U-Net this project cannot train: "
                              "it comes with converted weights (unclip.convert); start from them with init_from")
        torch.manual_seed(settings.train.seed)
        return Upsampler(settings.upsampler)
    model = start_from(init_from, load_upsampler, f"upsampler{settings.upsampler.stage}")
    if model.final_unet is not None:
        model.final_unet.requires_grad_(False)
    return model


def train_upsampler(settings: UpsamplerTrainSettings, out_dir: str | Path,
                    tracker: Tracker | None = None, init_from: str | Path | None = None) -> tuple[Path, dict[str, float]]:
    """Train, evaluate on held-out images and write `out_dir/model` (+ `out_dir/side_by_side.png`:
    low-res | bicubic | model | ground truth); `init_from`: an upsampler folder to fine-tune instead of
    a new one (core.init_from). Returns (model folder, metrics)."""
    out_dir = Path(out_dir)
    model = build_upsampler(settings, init_from)
    try:
        settings = with_data_size(settings.override(upsampler=model.cfg))
    except ConfigError as err:
        raise ConfigError(f"the training settings do not fit the upsampler in {init_from}: {err}") from None
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

    train = settings.train
    raw = sets["train"].batches(("images",), train.batch_size, train.seed, settings.buffer_rows,
                                prepare=pair_batches(up, settings.crop_size, train.batch_size, settings.crop_tries))
    images: dict = {}
    evaluate = make_evaluate(val, settings, images)
    parent = parent_metrics(evaluate, model) if init_from is not None else {}
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = fit(model, make_loss(up, settings.channels_last), raw, settings.train, out_dir / "run", run_config=settings,
                 evaluate=evaluate, tracker=tracker, accelerator=acc, desc=f"upsampler {up.stage}")
    folder = out_dir / "model"
    if acc.is_main_process:
        save_upsampler(folder, result.ema.float(), {"train_settings": settings})
        write_json(folder / "metrics.json", {**result.metrics, **skips, **parent})
        if "side_by_side" in images:
            images["side_by_side"].save(out_dir / "side_by_side.png")
    acc.wait_for_everyone()
    return folder, {**result.metrics, **skips, **parent}


def main(argv: list[str] | None = None) -> int:
    parser = training_parser("python -m upsamplers.train", __doc__, PRESETS[1], None, "runs/upsampler<stage>")
    parser.add_argument("--stage", type=int, default=1, choices=sorted(PRESETS), help="1: 64→256, 2: 256→1024")
    args = parser.parse_args(argv)
    args.out = args.out or f"runs/upsampler{args.stage}"

    def train(settings: UpsamplerTrainSettings, tracker):
        folder, metrics = train_upsampler(settings, args.out, tracker)
        return "upsampler", folder, metrics
    return run_training(args, f"unclip-upsampler{args.stage}",
                        lambda: settings_for(args.stage, args.preset, args.overrides), train)


if __name__ == "__main__":
    raise SystemExit(main())
