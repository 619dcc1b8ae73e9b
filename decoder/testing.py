"""Tiny decoders and fake conditioning for tests (no CLIP needed)."""

from __future__ import annotations

import torch

from core.diffusion import NoiseConfig
from decoder.config import DecoderConfig, UNetConfig
from decoder.model import Decoder
from decoder.sample import Caption

DIM, WIDTH, TOKENS, SIZE = 16, 24, 6, 16


def tiny_config(**changes) -> DecoderConfig:
    unet = UNetConfig(channels=8, channel_mult=(1, 2), layers_per_block=1, attention_resolutions=(8,), head_dim=8,
                      context_dim=16, norm_groups=4, dropout=0.0, resample="conv")
    base = DecoderConfig(image_size=SIZE, unet=unet, noise=NoiseConfig(prediction="v_prediction", train_steps=100),
                         embed_dim=DIM, text_width=WIDTH)
    return base.override(**changes) if changes else base


def tiny_decoder(seed: int = 0, **changes) -> Decoder:
    torch.manual_seed(seed)
    decoder = Decoder(tiny_config(**changes)).eval()
    # diffusers zero-initialises nothing we rely on here, but the null embedding starts at zero:
    # give it a value so the unconditional branch differs from a zero embedding in tests.
    with torch.no_grad():
        decoder.null_image_embed.normal_()
    return decoder


def fake_caption(batch: int, seed: int = 0, tokens: int = TOKENS) -> Caption:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    for i in range(batch):
        mask[i, 2 + (i % (tokens - 2)):] = False
    return Caption(torch.nn.functional.normalize(torch.randn(batch, DIM, generator=g), dim=-1),
                   torch.randn(batch, tokens, WIDTH, generator=g), mask)


def fake_image_embeds(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(batch, DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)
