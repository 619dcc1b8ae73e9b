"""Train the diffusion prior from embedding shards (no images, no CLIP in the loop).

    python -m prior.train --preset demo --shards runs/shards/train --val-shards runs/shards/val --out runs/prior
    python -m prior.train --preset demo --shards ... --out ... --set train.steps=500 --set prior.cond_drop=0.2
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from pydantic import Field

from clip.shards import EmbeddingShards, shard_skips
from clip.spec import check_same_clip
from core.cli import run_training, training_parser
from core.config import Config, apply_overrides, pick_preset
from core.diffusion import NoiseConfig, diffusion_loss, training_scheduler
from core.errors import ConfigError, UnclipError
from core.init_from import parent_metrics, start_from
from core.trainer import Tracker, TrainConfig, fit, make_accelerator
from prior.config import PRIOR_PRESETS, PriorConfig, PriorEvalConfig
from prior.evaluate import HeldOut, clip_text_embedder, evaluate_prior
from prior.io import load_prior, save_prior
from prior.model import DiffusionPrior, condition_dropout, count_parameters

log = logging.getLogger("prior.train")
FIELDS = ("image_embeds", "text_embeds", "text_tokens", "text_mask")


class PriorTrainSettings(Config):
    prior: PriorConfig
    train: TrainConfig
    eval: PriorEvalConfig = PriorEvalConfig()
    buffer_rows: int = Field(65536, gt=0, description="training pairs shuffled together: the memory the data takes")


# The paper's optimiser: AdamW lr 1.1e-4, betas (0.9, 0.96), eps 1e-6, weight decay 6e-2, EMA 0.9999.
_PAPER_OPT = {"betas": (0.9, 0.96), "eps": 1e-6, "weight_decay": 6e-2}

PRESETS: dict[str, PriorTrainSettings] = {
    "smoke": PriorTrainSettings(
        prior=PRIOR_PRESETS["smoke"],
        train=TrainConfig(steps=20, batch_size=32, lr=1e-3, warmup_steps=2, log_every=5, ema_decay=0.9),
        eval=PriorEvalConfig(size=64, steps=8, zeroshot=False),
    ),
    "demo": PriorTrainSettings(
        prior=PRIOR_PRESETS["demo"],
        train=TrainConfig(steps=400, batch_size=128, lr=5e-4, warmup_steps=50, min_lr_ratio=0.05,
                          ema_decay=0.995, log_every=25, **_PAPER_OPT),
        eval=PriorEvalConfig(size=600, steps=16),
    ),
    "base": PriorTrainSettings(
        prior=PRIOR_PRESETS["base"],
        train=TrainConfig(steps=50000, batch_size=512, lr=3e-4, warmup_steps=1000, min_lr_ratio=0.05,
                          mixed_precision="bf16", ema_decay=0.9999, checkpoint_every=2500, eval_every=5000,
                          **_PAPER_OPT),
    ),
    "paper": PriorTrainSettings(
        prior=PRIOR_PRESETS["paper"],
        train=TrainConfig(steps=600000, batch_size=512, grad_accum=8, lr=1.1e-4, warmup_steps=10000,
                          mixed_precision="bf16", ema_decay=0.9999, checkpoint_every=5000, eval_every=20000,
                          **_PAPER_OPT),
    ),
}


def settings_for(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> PriorTrainSettings:
    return apply_overrides(pick_preset(PRESETS, preset, "prior training"), overrides)


def make_loss(noise: NoiseConfig, cond_drop: float):
    """core.diffusion's loss on the normalised image embeddings, the caption dropped to the learned null
    at rate cond_drop."""
    scheduler = training_scheduler(noise)

    def prior_loss(model, batch) -> torch.Tensor:
        x0 = batch["x0"]

        def predict(x_t, t):
            drop = condition_dropout(x0.shape[0], cond_drop, x0.device)
            return model(x_t, t, batch["text_embeds"], batch["tokens"], batch["mask"], drop=drop)
        return diffusion_loss(scheduler, x0, predict)
    return prior_loss


def training_tensors(prior: DiffusionPrior, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a batch holds: normalised targets (the same rule as sampling) and the caption encodings."""
    return {"x0": prior.normalise(data["image_embeds"].float()).detach(), "text_embeds": data["text_embeds"].float(),
            "tokens": data["text_tokens"].float(), "mask": data["text_mask"].bool()}


def training_batches(prior: DiffusionPrior, shards: EmbeddingShards, train: TrainConfig, buffer_rows: int):
    """Streamed batches of `training_tensors`."""
    first = shards.load(FIELDS, limit=1)
    prior.check_text(first["text_embeds"], first["text_tokens"], first["text_mask"])
    raw = shards.batches(FIELDS, train.batch_size, train.seed, buffer_rows)

    def batches(epoch: int, rank: int, world: int):
        for batch in raw(epoch, rank, world):
            yield training_tensors(prior, batch)
    return batches


def build_prior(settings: PriorTrainSettings, shards: EmbeddingShards,
                init_from: str | Path | None = None) -> DiffusionPrior:
    """A new prior for the shards' CLIP, or the one in `init_from` (which must share that CLIP)."""
    if init_from is not None:
        return start_from(init_from, lambda folder: load_prior(folder, expected_spec=shards.spec), "prior")
    if settings.prior.null_caption == "empty_caption":
        raise ConfigError("prior.null_caption 'empty_caption' is CLIP's encoding of the empty caption, which comes "
                          "with converted weights (unclip.convert): start from them with init_from")
    spec = shards.spec
    e = settings.eval
    sampling = settings.prior.sampling.filled(sampler=e.sampler, steps=e.steps, guidance=e.guidance,
                                              best_of=e.prior_best_of)
    config = settings.prior.for_clip(spec.embed_dim, spec.context_length, spec.text_width).override(sampling=sampling)
    torch.manual_seed(settings.train.seed)
    prior = DiffusionPrior(config, clip_spec=spec)
    if config.normalise == "standardise":
        prior.set_stats(shards.image_mean.float(), shards.image_std.float())
    return prior


def make_evaluate(settings: PriorTrainSettings, val: EmbeddingShards):
    held = HeldOut.from_tensors(val.load(FIELDS, limit=settings.eval.size), val.captions, settings.eval.size)
    embed_text = None
    if settings.eval.zeroshot:
        try:
            embed_text = clip_text_embedder(val.spec)
        except (UnclipError, OSError, RuntimeError) as err:
            log.warning("no zero-shot figures: cannot load the CLIP (%s)", err)

    def evaluate(model, step: int) -> dict[str, float]:
        return evaluate_prior(model, held, settings.eval, embed_text)
    return evaluate


def train_prior(settings: PriorTrainSettings, shards_dir: str | Path, out_dir: str | Path,
                tracker: Tracker | None = None, val_shards_dir: str | Path | None = None,
                init_from: str | Path | None = None) -> tuple[Path, dict]:
    """Train on `shards_dir`, evaluate the EMA weights on `val_shards_dir`, write `out_dir/model`
    (see prior.io). Training checkpoints go to `out_dir/run` (resumable). `init_from`: a prior folder to
    fine-tune instead of a new prior (core.init_from). Returns (folder, metrics)."""
    out_dir = Path(out_dir)
    shards = EmbeddingShards.open(shards_dir)
    val = EmbeddingShards.open(val_shards_dir) if val_shards_dir is not None else None
    if val is not None:
        check_same_clip(shards.spec, val.spec, f"validation shards {val_shards_dir}")
    if shards.count < settings.train.batch_size:
        raise ConfigError(f"{shards_dir} holds {shards.count} examples, fewer than one batch "
                          f"(train.batch_size={settings.train.batch_size})")
    prior = build_prior(settings, shards, init_from)
    settings = settings.override(prior=prior.config)
    batches = training_batches(prior, shards, settings.train, settings.buffer_rows)
    log.info("prior: %.2fM parameters, %d training pairs", count_parameters(prior) / 1e6, shards.count)
    if tracker is not None and hasattr(tracker, "log_params"):
        tracker.log_params({**settings.model_dump(mode="json"), "shards": shards.fingerprint(),
                            "clip": shards.spec.fingerprint()})

    acc = make_accelerator(settings.train.mixed_precision)
    evaluate = make_evaluate(settings, val) if val else None
    parent = parent_metrics(evaluate, prior) if init_from is not None else {}
    result = fit(prior, make_loss(settings.prior.noise, settings.prior.cond_drop),
                 batches, settings.train,
                 out_dir / "run", run_config=settings, evaluate=evaluate,
                 tracker=tracker, accelerator=acc, desc="prior")
    folder = out_dir / "model"
    if acc.is_main_process:
        info = {"shards": str(Path(shards_dir).resolve()), "shards_fingerprint": shards.fingerprint(),
                "dataset_fingerprint": shards.dataset_fingerprint, "step": result.step, "metrics": result.metrics,
                "train_settings": settings.model_dump(mode="json")}
        save_prior(folder, result.ema.float().cpu(), shards.spec, info)
    acc.wait_for_everyone()
    return folder, {**result.metrics, **shard_skips(shards, val), **parent}


def main(argv: list[str] | None = None) -> int:
    parser = training_parser("python -m prior.train", __doc__, PRESETS, "runs/prior")
    parser.add_argument("--shards", required=True, help="training embedding shards (python -m clip.embed)")
    parser.add_argument("--val-shards", help="held-out embedding shards to evaluate on")
    args = parser.parse_args(argv)

    def train(settings: PriorTrainSettings, tracker):
        folder, metrics = train_prior(settings, args.shards, args.out, tracker, val_shards_dir=args.val_shards)
        return "prior", folder, metrics
    return run_training(args, "unclip-prior", lambda: settings_for(args.preset, args.overrides), train)


if __name__ == "__main__":
    raise SystemExit(main())
