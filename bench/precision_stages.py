"""The stages bench/bench_precision.py measures: demo-sized (or tiny) random networks, their inputs, one
sampling call per stage in a given precision, and one training step per stage.

Weights are random (speed does not depend on them); the upsamplers' zero output layers get small random
weights so that their outputs differ from the bicubic input and the PSNR check means something. Images
are the procedural shapes, rendered here, so no dataset has to be built.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.precision import autocast
from data.shapes import render, sample_attributes

EMBED, CONTEXT, WIDTH = 128, 16, 128  # the demo CLIP's embedding size, caption tokens and token width


@dataclass
class Sampling:
    """One stage's sampling call `run(precision) -> output` and what the PSNR check compares (images)."""

    name: str
    run: Callable[[str], torch.Tensor]
    images: bool
    rows: int


@dataclass
class Training:
    """One stage's training: `step(model, optimizer, batch_index, precision) -> loss` over fixed batches."""

    name: str
    model: torch.nn.Module
    loss_fn: Callable
    batches: list
    channels_last: bool


def stage_parser(description: str, only: str) -> argparse.ArgumentParser:
    """The options bench_precision and profile_precision share: threads, images per call, stages, tiny, json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--images", type=int, default=4, help="images per sampling call (default: 4)")
    parser.add_argument("--only", default=None, help=f"comma-separated {only}, e.g. decoder,upsampler2")
    parser.add_argument("--tiny", action="store_true", help="tiny networks (a smoke run)")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def shapes_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 [count, 3, size, size] renderings of random shapes captions."""
    import numpy as np

    arrays = [np.asarray(render(sample_attributes(seed, i), size).convert("RGB")) for i in range(count)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def to_signed(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


def fake_text(rows: int, seed: int = 0):
    from decoder.sample import Caption

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, CONTEXT + 1, (rows,), generator=g)
    mask = torch.arange(CONTEXT)[None] < lengths[:, None]
    return Caption(F.normalize(torch.randn(rows, EMBED, generator=g), dim=-1),
                   torch.randn(rows, CONTEXT, WIDTH, generator=g) * mask[..., None], mask)


def unit_embeds(rows: int, seed: int = 1) -> torch.Tensor:
    return F.normalize(torch.randn(rows, EMBED, generator=torch.Generator().manual_seed(seed)), dim=-1)


# -- networks ------------------------------------------------------------------------------------------
def build_prior(tiny: bool):
    from prior.model import DiffusionPrior
    from prior.train import settings_for

    cfg = settings_for("demo").prior
    if tiny:
        cfg = cfg.override(heads=2, head_dim=16, layers=1)
    torch.manual_seed(0)
    prior = DiffusionPrior(cfg.for_clip(EMBED, CONTEXT, WIDTH)).eval()
    prior.set_stats(torch.zeros(EMBED), torch.full((EMBED,), EMBED**-0.5))
    return prior


def build_decoder(tiny: bool):
    from decoder.config import DecoderConfig, UNetConfig, settings_for
    from decoder.model import Decoder

    settings = settings_for("demo")
    cfg = settings.decoder
    if tiny:
        cfg = DecoderConfig(image_size=16, patch_size=2, coord_channels=True, draft_width=32, refine_width=8,
                            noise=cfg.noise, unet=UNetConfig(channels=8, channel_mult=(1, 2), layers_per_block=1,
                                                             attention_resolutions=(4,), head_dim=8, context_dim=16,
                                                             norm_groups=4, dropout=0.0, resample="conv"))
        settings = settings.override(decoder=cfg, train=settings.train.override(batch_size=4))
    torch.manual_seed(0)
    decoder = Decoder(cfg.for_clip(EMBED, WIDTH)).eval()
    with torch.no_grad():
        decoder.null_image_embed.normal_()
    return decoder, settings.override(decoder=decoder.cfg)


def build_upsampler(stage: int, tiny: bool):
    from upsamplers.config import settings_for
    from upsamplers.model import Upsampler

    settings = settings_for(stage, "demo")
    if tiny:
        up = settings.upsampler
        small = up.override(low_res=8, high_res=16 if stage == 1 else 32,
                            model=up.model.override(channels=(8, 16), layers_per_block=1))
        settings = settings.override(upsampler=small, crop=8 if stage == 1 else 16,
                                     train=settings.train.override(batch_size=2))
    torch.manual_seed(stage)
    model = Upsampler(settings.upsampler).eval()
    for unet in (model.unet, model.final_unet):
        if unet is not None:
            torch.nn.init.normal_(unet.conv_out.weight, std=0.02)
    return model, settings


# -- sampling calls ------------------------------------------------------------------------------------
def prior_sampling(prior, images: int, steps: int) -> Sampling:
    from prior.sample import sample_prior

    text = fake_text(images)
    return Sampling("prior", lambda p: sample_prior(prior, text, list(range(images)), steps=steps, best_of=2,
                                                    precision=p), images=False, rows=2 * images)


def decoder_sampling(decoder, images: int, best_of: int, steps: int) -> Sampling:
    from decoder.sample import decode

    rows = images * best_of
    text, embeds = fake_text(rows), unit_embeds(rows)
    return Sampling("decoder", lambda p: decode(decoder, embeds, text, list(range(rows)), steps=steps, guidance=1.0,
                                                precision=p), images=True, rows=rows)


def upsampler_sampling(model, images: int, low: torch.Tensor | None = None) -> Sampling:
    from upsamplers.sample import upsample

    size = model.cfg.low_res
    low = to_signed(shapes_images(images, size, seed=5)) if low is None else low
    return Sampling(f"upsampler{model.cfg.stage}", lambda p: upsample(model, low, precision=p), images=True,
                    rows=images)


# -- training ------------------------------------------------------------------------------------------
def decoder_training(decoder, settings, count: int) -> Training:
    from decoder.train import make_loss

    b = settings.train.batch_size
    size = decoder.cfg.image_size
    images = shapes_images(count * b, size, seed=7)
    text, embeds = fake_text(count * b, seed=8), unit_embeds(count * b, seed=9)
    batches = [{"images": images[i * b:(i + 1) * b], "image_embeds": embeds[i * b:(i + 1) * b],
                "text_embeds": text.embeds[i * b:(i + 1) * b], "text_tokens": text.tokens[i * b:(i + 1) * b],
                "text_mask": text.mask[i * b:(i + 1) * b]} for i in range(count)]
    model = copy.deepcopy(decoder).train()
    if model.draft is not None:
        model.draft.requires_grad_(False)  # fitted before the U-Net and frozen, as in training
    return Training("decoder", model, make_loss(settings), batches, settings.channels_last)


def upsampler_training(model, settings, count: int) -> Training:
    from upsamplers.pairs import make_pair
    from upsamplers.train import make_loss

    up, b, crop = settings.upsampler, settings.train.batch_size, settings.crop_size
    pool = shapes_images(max(8, count), up.high_res, seed=11)
    batches = []
    for i in range(count):
        pairs = [make_pair(pool[(i * b + j) % len(pool)], up, crop, up.augment.train_level_max,
                           torch.Generator().manual_seed(i * 1000 + j), settings.crop_tries) for j in range(b)]
        batches.append(tuple(torch.stack(parts) for parts in zip(*pairs)))
    return Training(f"upsampler{up.stage}", copy.deepcopy(model).train(), make_loss(up, settings.channels_last),
                    batches, settings.channels_last)


def trainer_for(training: Training, precision: str, lr: float = 1e-3):
    """A fresh copy of the stage's model with its fused AdamW, and `step(i) -> loss` on batch i (seeded by i)."""
    model = copy.deepcopy(training.model)
    if training.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, fused=True)

    def step(i: int) -> float:
        torch.manual_seed(i)
        with autocast(precision, "cpu"):
            loss = training.loss_fn(model, training.batches[i % len(training.batches)])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def prior_training(prior, count: int, batch: int) -> Training:
    from prior.train import make_loss

    text, targets = fake_text(count * batch, seed=12), unit_embeds(count * batch, seed=13)
    x0 = prior.normalise(targets)
    batches = [{"x0": x0[i * batch:(i + 1) * batch], "text_embeds": text.embeds[i * batch:(i + 1) * batch],
                "tokens": text.tokens[i * batch:(i + 1) * batch], "mask": text.mask[i * batch:(i + 1) * batch]}
               for i in range(count)]
    return Training("prior", copy.deepcopy(prior).train(), make_loss(prior.config.noise, prior.config.cond_drop),
                    batches, False)


def clip_training(tiny: bool, count: int) -> Training:
    from clip.train import make_loss, settings_for

    settings = settings_for("smoke" if tiny else "demo")
    b, size = settings.train.batch_size, settings.model.image_size
    torch.manual_seed(0)
    model = settings.model.build()
    images = shapes_images(min(count * b, 256), size, seed=14)
    g = torch.Generator().manual_seed(15)
    batches = [(images[torch.randint(0, len(images), (b,), generator=g)],
                torch.randint(1, 49000, (b, settings.model.context_length), generator=g)) for _ in range(count)]
    return Training("clip", model, make_loss(1, 0, settings.augment, settings.channels_last), batches,
                    settings.channels_last)
