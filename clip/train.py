"""Train a small CLIP from scratch (open_clip model classes and contrastive loss).

    python -m clip.train --preset demo --out runs/clip
    python -m clip.train --preset demo --set train.steps=2000 --set model.embed_dim=256
"""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from clip.augment import ClipAugmentConfig, degrade
from clip.batches import contrastive_batches
from clip.config import PRESETS, ClipTrainSettings, settings_for
from clip.encoder import resolve_spec
from clip.evaluate import clip_metrics
from clip.spec import ClipSpec
from core.checkpoint import save_model_folder, write_json
from core.cli import run_training, training_parser
from core.trainer import Tracker, fit, make_accelerator
from data import open_dataset
from data.shards import ShardSet, add_counts, prepare_images
from data.skips import skip_metrics

log = logging.getLogger("clip.train")


def normalise_pixels(pixels: torch.Tensor, augment: ClipAugmentConfig | None = None) -> torch.Tensor:
    """uint8 [B,3,S,S] → the float input open_clip models expect (OpenAI mean/std), degraded if `augment` says so."""
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=pixels.device).view(1, 3, 1, 1)
    x = pixels.float() / 255
    if augment is not None:
        x = degrade(x, augment)
    return (x - mean) / std


def make_loss(world: int, rank: int, augment: ClipAugmentConfig | None = None, channels_last: bool = False):
    loss = open_clip.ClipLoss(gather_with_grad=world > 1, rank=rank, world_size=world)
    memory = torch.channels_last if channels_last else torch.contiguous_format

    def clip_loss(model, batch):
        pixels, tokens = batch
        out = model(normalise_pixels(pixels, augment).contiguous(memory_format=memory), tokens.long())
        return loss(out["image_features"], out["text_features"], out["logit_scale"])
    return clip_loss


def make_evaluate(val: dict[str, torch.Tensor], captions: list[str]):
    def evaluate(model, step: int) -> dict[str, float]:
        model = model.float()
        device = next(model.parameters()).device
        with torch.inference_mode():
            pixels = val["images"]
            image_embeds = torch.cat([model.encode_image(normalise_pixels(pixels[i:i + 256].to(device))).float().cpu()
                                      for i in range(0, len(pixels), 256)])
            text_embeds = torch.cat([model.encode_text(val["text_ids"][i:i + 256].long().to(device)).float().cpu()
                                     for i in range(0, len(pixels), 256)])
            tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=val["text_ids"].shape[1])

            def embed_text(texts: list[str]) -> torch.Tensor:
                return F.normalize(model.encode_text(tokenizer(texts).to(device)).float(), dim=-1).cpu()

            return clip_metrics(image_embeds, text_embeds, captions, embed_text)
    return evaluate


def prepare_splits(settings: ClipTrainSettings, out: Path) -> tuple[ShardSet, ShardSet]:
    """Both splits decoded once at the CLIP's resolution, with token ids, into image shards under `out`."""
    size, context = settings.model.image_size, settings.model.context_length
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=context)
    sets = []
    for split, limit in (("train", None), ("val", settings.eval_size)):
        dataset = open_dataset(settings.data, split)
        identity = {"dataset": dataset.fingerprint(), "tokens": f"open_clip/ViT-B-32/{context}"}
        sets.append(prepare_images(dataset, size, out / "images" / split, identity, limit=limit,
                                   desc=f"prepare {split}", tokenize=lambda captions: tokenizer(captions).int()))
    return sets[0], sets[1]


def train_clip(settings: ClipTrainSettings, out: str | Path, tracker: Tracker | None = None):
    """Train, evaluate and write `out/model` (weights + open_clip config + ClipSpec). Returns (spec, metrics)."""
    out = Path(out)
    acc = make_accelerator(settings.train.mixed_precision)
    train_set, val_set = prepare_splits(settings, out)
    skips = skip_metrics(add_counts(train_set.skips, val_set.skips))
    if skips.get("data.skipped"):
        log.warning("data: %s", ", ".join(f"{k} {v:g}" for k, v in skips.items()))
    torch.manual_seed(settings.train.seed)
    model = settings.model.build()
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train = settings.train
    batches = train_set.batches(("images", "text_ids"), train.batch_size, train.seed, settings.buffer_rows,
                                prepare=contrastive_batches(train.batch_size, settings.hard_fraction))
    val = val_set.head(None, ("images", "text_ids"))
    result = fit(model, make_loss(acc.num_processes, acc.process_index, settings.augment, settings.channels_last),
                 batches, train, out / "run", run_config=settings, evaluate=make_evaluate(val, val_set.captions),
                 tracker=tracker, accelerator=acc, desc="clip")
    metrics = {**result.metrics, **skips}
    folder = out / "model"
    if acc.is_main_process:
        save_model_folder(folder, result.ema.float(), {"open_clip_config": settings.model.open_clip_config(),
                                                      "train_settings": settings})
        spec = resolve_spec("open_clip", folder / "open_clip_config.json", folder / "model.safetensors")
        spec.save(folder)
        write_json(folder / "metrics.json", metrics)
    acc.wait_for_everyone()
    return ClipSpec.load(folder, own_files=True), metrics


def main(argv: list[str] | None = None) -> int:
    parser = training_parser("python -m clip.train", __doc__, PRESETS, "runs/clip")
    args = parser.parse_args(argv)

    def train(settings: ClipTrainSettings, tracker):
        spec, metrics = train_clip(settings, args.out, tracker)
        return f"CLIP (fingerprint {spec.fingerprint()})", Path(args.out) / "model", metrics
    return run_training(args, "unclip-clip", lambda: settings_for(args.preset, args.overrides), train)


if __name__ == "__main__":
    raise SystemExit(main())
