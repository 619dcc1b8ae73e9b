"""Train the decoder from embedding shards (images + CLIP image embeddings + caption token states).

    python -m decoder.train --preset demo --shards runs/shards/train --val-shards runs/shards/val --out runs/decoder
    python -m decoder.train --preset demo ... --set train.steps=500 --set decoder.unet.channels=64

No CLIP runs during training: everything comes precomputed from the shards. Images are only
resized to the decoder's resolution (no flips or crops: captions say left, right, top, bottom).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from clip.shards import EmbeddingShards, shard_skips
from clip.spec import check_same_clip
from core.checkpoint import write_json
from core.cli import run_training, training_parser
from core.diffusion import LossWeights, diffusion_loss, outline_weights, sample_error, training_scheduler
from core.errors import ConfigError
from core.init_from import parent_metrics, start_from
from core.trainer import Tracker, TrainConfig, fit, make_accelerator
from decoder.config import PRESETS, DecoderSettings, settings_for
from decoder.io import load_decoder, save_decoder
from decoder.model import CONDITIONS, Decoder

log = logging.getLogger("decoder.train")
FIELDS = (*CONDITIONS, "images")


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, 3, S, S] → uint8 [N, 3, size, size]; box-averaging for whole-number factors (exact flat colours)."""
    if images.shape[-1] == size:
        return images
    out = []
    for chunk in images.split(1024):
        x = chunk.float()
        if images.shape[-1] % size == 0:
            x = F.avg_pool2d(x, images.shape[-1] // size)
        else:
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def open_split(folder: str | Path, size: int) -> EmbeddingShards:
    """The shards of one split, checked to hold images at least the decoder's size."""
    shards = EmbeddingShards.open(folder)
    if shards.image_size is None or "images" not in shards.fields:
        raise ConfigError(f"{folder}: the shards hold no images; re-run the embed step with an image size")
    if shards.image_size < size:
        raise ConfigError(f"{folder}: shard images are {shards.image_size} px, smaller than the decoder's {size} px")
    return shards


def load_split(folder: str | Path, size: int, limit: int | None = None
               ) -> tuple[EmbeddingShards, dict[str, torch.Tensor], torch.Tensor]:
    """(shards, the first `limit` rows with images at the decoder's resolution, those images as stored):
    evaluation sets."""
    shards = open_split(folder, size)
    data = shards.load(FIELDS, limit=limit)
    stored = data["images"]
    data["images"] = resize_images(stored, size)
    return shards, data, stored


def training_batches(shards: EmbeddingShards, size: int, batch_size: int, seed: int, buffer_rows: int):
    """Streamed batches with the images at the decoder's resolution."""
    raw = shards.batches(FIELDS, batch_size, seed, buffer_rows)

    def batches(epoch: int, rank: int, world: int):
        for batch in raw(epoch, rank, world):
            batch["images"] = resize_images(batch["images"], size)
            yield batch
    return batches


def loss_weights(settings: DecoderSettings) -> LossWeights:
    return LossWeights(low_noise_share=settings.low_noise_share, low_noise_end=settings.low_noise_end,
                       min_snr_gamma=settings.min_snr_gamma, outline_weight=settings.outline_weight)


def make_loss(settings: DecoderSettings):
    """core.diffusion's loss on the images, with the decoder's guidance dropout of image and caption."""
    cfg = settings.decoder
    scheduler = training_scheduler(cfg.noise)
    memory = torch.channels_last if settings.channels_last else torch.contiguous_format
    weights = loss_weights(settings)

    def loss_fn(model, batch) -> torch.Tensor:
        x0 = (batch["images"].float() / 127.5 - 1).contiguous(memory_format=memory)
        b = x0.shape[0]

        def predict(x_t, t):
            drop_image = torch.rand(b, device=x0.device) < cfg.image_dropout
            drop_text = torch.rand(b, device=x0.device) < cfg.text_dropout
            return model(x_t, t, **{k: batch[k] for k in CONDITIONS}, drop_image=drop_image, drop_text=drop_text)
        return diffusion_loss(scheduler, x0, predict, weights, cfg.learned_variance)
    return loss_fn


def train_decoder(settings: DecoderSettings, shards_dir: str | Path, out_dir: str | Path,
                  tracker: Tracker | None = None, val_shards_dir: str | Path | None = None,
                  init_from: str | Path | None = None):
    """Train, evaluate on `val_shards_dir` (if given) and write `out_dir/model`; `init_from`: a decoder
    folder to fine-tune instead of a new decoder (core.init_from). Returns (EMA decoder, metrics)."""
    out_dir = Path(out_dir)
    model = build_decoder(settings, EmbeddingShards.open(shards_dir).spec, init_from)
    settings = settings.override(decoder=model.cfg)
    size = settings.decoder.image_size
    shards = open_split(shards_dir, size)
    spec = shards.spec
    acc = make_accelerator(settings.train.mixed_precision)
    evaluate, val = None, None
    if val_shards_dir is not None:
        evaluate, val = _make_evaluate(settings, spec, val_shards_dir, out_dir, acc.device)
    parent = parent_metrics(evaluate, model) if init_from is not None else {}
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    log.info("decoder: %.2fM parameters, %d training examples at %d px", sum(p.numel() for p in model.parameters()) / 1e6,
             shards.count, size)
    if model.draft is not None and init_from is None:
        fit_draft(model, shards, settings, out_dir / "draft_run", acc, tracker)
    elif model.draft is not None:  # the parent's draft, fitted already
        model.draft.requires_grad_(False)
    train = settings.train
    result = fit(model, make_loss(settings), training_batches(shards, size, train.batch_size, train.seed,
                                                               settings.buffer_rows),
                 train, out_dir / "run", run_config=settings, evaluate=evaluate, tracker=tracker,
                 accelerator=acc, desc="decoder")
    metrics = {**result.metrics, **shard_skips(shards, val), **parent}
    if acc.is_main_process:
        save_decoder(out_dir / "model", result.ema, spec)
        write_json(out_dir / "model" / "metrics.json", metrics)
        write_json(out_dir / "model" / "train_settings.json", settings)
    acc.wait_for_everyone()
    return result.ema, metrics


def build_decoder(settings: DecoderSettings, spec, init_from: str | Path | None = None) -> Decoder:
    """A new decoder for the CLIP `spec`, or the one in `init_from` (which must share that CLIP)."""
    if init_from is not None:
        return start_from(init_from, lambda folder: load_decoder(folder, clip_spec=spec)[0], "decoder")
    if settings.decoder.null_text == "empty_caption":
        raise ConfigError("decoder.null_text 'empty_caption' is CLIP's encoding of the empty caption, which comes "
                          "with converted weights (unclip.convert): start from them with init_from")
    torch.manual_seed(settings.train.seed)
    return Decoder(_for_clip(settings, spec.embed_dim, spec.text_width))


def make_draft_loss(decoder: Decoder, settings: DecoderSettings):
    """The draft's pixel error against the clean image, with the decoder's guidance dropout (its null
    image embedding, untrained at this point, taken as it is)."""
    cfg = settings.decoder

    def loss_fn(draft, batch) -> torch.Tensor:
        b = batch["images"].shape[0]
        device = batch["images"].device
        drop_image = torch.rand(b, device=device) < cfg.image_dropout
        drop_text = torch.rand(b, device=device) < cfg.text_dropout
        cond = decoder.drop_conditions(*(batch[k] for k in CONDITIONS), drop_image, drop_text)
        x0 = batch["images"].float() / 127.5 - 1
        error = draft(cond["image_embeds"], cond["text_embeds"]).float() - x0
        pixel = outline_weights(x0, settings.outline_weight) if settings.outline_weight else None
        return sample_error(error, pixel).mean()
    return loss_fn


def fit_draft(model: Decoder, shards: EmbeddingShards, settings: DecoderSettings, run_dir: Path, acc,
              tracker: Tracker | None = None) -> None:
    """Fit the decoder's draft MLP to the training images through the shared training loop (resumable,
    tracked under `draft.`), then freeze it: the U-Net trains beside a fixed draft."""
    draft = settings.draft
    if draft.steps:
        cfg = TrainConfig(steps=draft.steps, batch_size=draft.batch_size, lr=draft.lr, grad_clip=None, ema_decay=0.0,
                          log_every=max(1, min(100, draft.steps // 10)), seed=settings.train.seed)
        model.to(acc.device)
        batches = training_batches(shards, settings.decoder.image_size, draft.batch_size, cfg.seed + 1,
                                   settings.buffer_rows)
        fit(model.draft, make_draft_loss(model, settings), batches, cfg, run_dir, run_config=settings,
            tracker=None if tracker is None else Prefixed(tracker, "draft."), accelerator=acc, desc="decoder draft")
    model.draft.requires_grad_(False)


class Prefixed:
    """A tracker that logs under a prefix: a second training loop within one MLflow run."""

    def __init__(self, tracker: Tracker, prefix: str) -> None:
        self.tracker, self.prefix = tracker, prefix

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.tracker.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step)

    def log_image(self, image, name: str, step: int) -> None:
        self.tracker.log_image(image, self.prefix + name, step)


def _for_clip(settings: DecoderSettings, embed_dim: int, text_width: int):
    cfg = settings.decoder
    for name, value in (("embed_dim", embed_dim), ("text_width", text_width)):
        if getattr(cfg, name) not in (None, value):
            raise ConfigError(f"decoder.{name}={getattr(cfg, name)} but the shards' CLIP has {value}")
    e = settings.eval
    sampling = cfg.sampling.filled(sampler=e.sampler, steps=e.steps, guidance=e.guidance, best_of=e.decoder_best_of)
    return cfg.for_clip(embed_dim, text_width).override(sampling=sampling)


def _make_evaluate(settings: DecoderSettings, spec, val_shards_dir, out_dir: Path, device: torch.device):
    from clip.encoder import load_encoder
    from decoder.evaluate import evaluate_decoder

    val_shards, val, real = load_split(val_shards_dir, settings.decoder.image_size, limit=settings.eval.size)
    check_same_clip(spec, val_shards.spec, f"validation shards {val_shards_dir}")
    encoder = load_encoder(spec, device)

    def evaluate(ema_model, step: int):
        results = evaluate_decoder(ema_model, val, real, val_shards.captions, encoder, settings.eval)
        grid = results.get("sample_grid")
        if grid is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            grid.save(out_dir / f"samples_{step:08d}.png")
        return results
    return evaluate, val_shards


def main(argv: list[str] | None = None) -> int:
    parser = training_parser("python -m decoder.train", __doc__, PRESETS, "runs/decoder")
    parser.add_argument("--shards", required=True, help="training embedding shards (with images)")
    parser.add_argument("--val-shards", default=None, help="held-out shards for the evaluation (optional)")
    args = parser.parse_args(argv)

    def train(settings: DecoderSettings, tracker):
        _, metrics = train_decoder(settings, args.shards, args.out, tracker, val_shards_dir=args.val_shards)
        return "decoder", Path(args.out) / "model", metrics
    return run_training(args, "unclip-decoder", lambda: settings_for(args.preset, args.overrides), train)


if __name__ == "__main__":
    raise SystemExit(main())
