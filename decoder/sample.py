"""Decoding CLIP image embeddings (and captions) into images, and DDIM inversion back to x_T.

Thin wrappers over `core.diffusion`: the decoder is the network, the sampler is a diffusers
scheduler, classifier-free guidance is `core.diffusion.guided` (conditional and unconditional
branches in one batched forward). Sample i depends only on seeds[i] (and x_T[i]), never on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from core.diffusion import (
    Sampler,
    ddim_invert,
    guided,
    initial_noise,
    mean_channels,
    sample,
    sampling_scheduler,
)
from core.errors import ConfigError
from core.precision import Precision, Resolved, check_precision, inference_copy, resolve
from decoder.model import Decoder


@dataclass(frozen=True)
class Caption:
    """A caption as CLIP encoded it: `embeds` [B, D], `tokens` [B, L, W], `mask` [B, L] (True = real token).
    `clip.encoder.TextEncoding` has the same fields and can be passed wherever a Caption is."""

    embeds: Tensor
    tokens: Tensor
    mask: Tensor


def conditions(decoder: Decoder, image_embeds: Tensor, text: Caption | None) -> dict[str, Tensor]:
    """The keyword inputs of Decoder.forward; `text=None` decodes from the image embedding alone
    (the caption dropped, as in the `text_dropout` share of training samples)."""
    device = next(decoder.parameters()).device
    image_embeds = image_embeds.to(device, torch.float32)
    if image_embeds.ndim != 2:
        raise ConfigError(f"image_embeds must be [B, D], got shape {tuple(image_embeds.shape)}")
    batch = image_embeds.shape[0]
    if text is None:
        empty = decoder.unconditional(batch, 1, device)
        return {"image_embeds": image_embeds, **{k: v for k, v in empty.items() if k != "image_embeds"}}
    if text.embeds.shape[0] != batch or text.tokens.shape[0] != batch or text.mask.shape[0] != batch:
        raise ConfigError(f"{batch} image embeddings but captions for {text.embeds.shape[0]}")
    return {"image_embeds": image_embeds, "text_embeds": text.embeds.to(device, torch.float32),
            "text_tokens": text.tokens.to(device, torch.float32), "text_mask": text.mask.to(device).bool()}


def denoiser(decoder: Decoder, cond: dict[str, Tensor], guidance: float, sampler: Sampler | None = None):
    """The guided network for `sampler`; a learned variance is kept only for the sampler that uses it. The
    conditioning (context tokens, draft) is computed once, not at every step."""
    if guidance < 1.0:
        raise ConfigError(f"guidance scale must be >= 1 (1 = no guidance), got {guidance}")
    batch, tokens = cond["text_tokens"].shape[:2]
    uncond = decoder.unconditional(batch, tokens, cond["image_embeds"].device)
    return _for_sampler(decoder, guided(decoder, cond, uncond, guidance, _guided_channels(decoder), _prepare(decoder)),
                        sampler)


def blended(decoder: Decoder, cond: dict[str, Tensor], other: dict[str, Tensor], weight: Tensor,
            sampler: Sampler | None = None):
    """Per sample (1 − w)·f(cond) + w·f(other), both branches in one batched forward: a caption that
    moves from one text to another (w = 0: `cond` alone, w = 1: `other` alone)."""
    if cond["text_tokens"].shape != other["text_tokens"].shape:
        raise ConfigError("blended captions must come from one encoding (the same token length)")
    return _for_sampler(decoder, guided(decoder, other, cond, weight, _guided_channels(decoder), _prepare(decoder)),
                        sampler)


def _prepare(decoder: Decoder):
    return lambda cond: {"prepared": decoder.prepare(**cond)}


def _guided_channels(decoder: Decoder) -> int | None:
    return 3 if decoder.cfg.learned_variance else None  # guide the prediction, not the variance


def _for_sampler(decoder: Decoder, denoise, sampler: Sampler | None):
    return denoise if sampler == "unclip" or not decoder.cfg.learned_variance else mean_channels(denoise)


@torch.no_grad()
def decode(decoder: Decoder, image_embeds: Tensor, text: Caption | None, seeds: Sequence[int], *,
           steps: int = 25, sampler: Sampler = "ddim", guidance: float = 3.0, eta: float = 0.0,
           threshold: float | None = None, x_T: Tensor | None = None, batch_size: int | None = None,
           progress: bool = False, blend: tuple[Caption, Tensor] | None = None,
           precision: Precision = "fp32") -> Tensor:
    """Images [B, 3, S, S] in [-1, 1] from image embeddings [B, D] and their captions.

    `seeds` (one per image) fix x_T and any sampler noise; `x_T` (e.g. from `invert`) replaces the
    seeded start. `threshold` turns on dynamic thresholding (for high guidance scales). `blend` =
    (other captions, weights [B]) decodes with the prediction moved from `text`'s towards the other
    captions' by each weight (`blended`; unguided, so guidance must be 1). `precision`: fp32, bf16 (a
    bf16-weight copy of the decoder; the sampler's arithmetic stays fp32) or auto (the faster here).
    """
    seeds = [int(s) for s in seeds]
    if len(seeds) != image_embeds.shape[0]:
        raise ConfigError(f"{image_embeds.shape[0]} image embeddings but {len(seeds)} seeds")
    size = decoder.cfg.image_size
    if x_T is not None and tuple(x_T.shape) != (len(seeds), 3, size, size):
        raise ConfigError(f"x_T must have shape {(len(seeds), 3, size, size)}, got {tuple(x_T.shape)}")
    sampling_scheduler(decoder.cfg.noise, sampler, steps, threshold=threshold, learned_variance=decoder.cfg.learned_variance)  # check first
    if blend is not None and (text is None or guidance != 1.0 or len(blend[1]) != len(seeds)):
        raise ConfigError("a caption blend needs the starting captions, one weight per image and guidance 1")
    was_training = decoder.training
    decoder.eval()
    device = next(decoder.parameters()).device
    cond = conditions(decoder, image_embeds, text)
    other = conditions(decoder, image_embeds, blend[0]) if blend is not None else None
    chunk = batch_size or len(seeds)
    network = None
    out = []
    for start in range(0, len(seeds), chunk):
        part = slice(start, start + chunk)
        scheduler = sampling_scheduler(decoder.cfg.noise, sampler, steps, threshold=threshold, learned_variance=decoder.cfg.learned_variance)
        if x_T is None:
            x = initial_noise(seeds[part], (3, size, size), device) * scheduler.init_noise_sigma
        else:
            x = x_T[part].to(device, torch.float32)

        make = partial(_chunk_denoiser, cond={k: v[part] for k, v in cond.items()}, guidance=guidance, sampler=sampler,
                       other=None if other is None else {k: v[part] for k, v in other.items()},
                       weights=None if blend is None else blend[1][part])
        if network is None:  # the first chunk decides the precision
            first = scheduler.timesteps[:1].expand(len(x)).to(device)
            network = decoder_in(decoder, precision, partial(_one_step, make, x, first),
                                 key=(len(x), guidance != 1.0, blend is not None))
        x = sample(make(network), scheduler, x, seeds=seeds[part], eta=eta, progress=progress, desc="decode")
        out.append(x.clamp(-1, 1))
    decoder.train(was_training)
    return torch.cat(out)


def _chunk_denoiser(net: Decoder, cond, other, weights, guidance: float, sampler: Sampler):
    if other is None:
        return denoiser(net, cond, guidance, sampler)
    return blended(net, cond, other, weights, sampler)


def _one_step(make, x: Tensor, t: Tensor, net: Decoder) -> None:
    make(net)(x, t)


def decoder_in(decoder: Decoder, precision: Precision, probe_step, key=()) -> Decoder:
    """The decoder in `precision`: itself in fp32, a bf16-weight copy in bf16; for `auto` the faster of the
    two on `probe_step(network)` (one denoising step) on this machine."""
    def probe(chosen: Resolved) -> None:
        with torch.inference_mode():
            probe_step(inference_copy(decoder, chosen))

    device = next(decoder.parameters()).device
    chosen = resolve(check_precision(precision), "decoder", device, probe, key=(key, decoder.cfg.fingerprint()),
                     rounds=1)
    return inference_copy(decoder, chosen)


@torch.no_grad()
def invert(decoder: Decoder, images: Tensor, image_embeds: Tensor, text: Caption | None, *, steps: int = 50,
           guidance: float = 1.0, progress: bool = False, precision: Precision = "fp32") -> Tensor:
    """DDIM inversion: images [B, 3, S, S] in [-1, 1] → x_T such that `decode(..., x_T=x_T, sampler="ddim",
    eta=0, steps=steps, guidance=guidance)` reconstructs them (best in the precision it was inverted in)."""
    size = decoder.cfg.image_size
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
        raise ConfigError(f"images must be [B, 3, {size}, {size}] for this decoder, got {tuple(images.shape)}")
    was_training = decoder.training
    decoder.eval()
    device = next(decoder.parameters()).device
    cond = conditions(decoder, image_embeds, text)
    x0 = images.to(device, torch.float32)
    make = partial(_chunk_denoiser, cond=cond, other=None, weights=None, guidance=guidance, sampler=None)
    first = torch.zeros(len(x0), dtype=torch.long, device=device)
    network = decoder_in(decoder, precision, partial(_one_step, make, x0, first), key=(len(x0), guidance != 1.0))
    x_T = ddim_invert(make(network), decoder.cfg.noise, x0, steps, progress=progress)
    decoder.train(was_training)
    return x_T
