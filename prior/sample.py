"""Sampling the prior: caption encodings → L2-normalised CLIP image embeddings.

A sample is a pure function of its caption, its seed and the settings: candidate k of the
caption with seed s starts from the noise of its own stream of s (k = 0 is the seed itself,
`core.candidates`), drawn by its own generator, so neither the batch size nor the chunking changes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from core.candidates import candidate_seeds, dot_scores, pick_best
from core.diffusion import guided, initial_noise, sample, sampling_scheduler
from core.errors import ConfigError
from core.precision import Precision, Resolved, check_precision, inference_copy, resolve
from prior.model import DiffusionPrior


class TextLike(Protocol):
    """clip.TextEncoding or anything with the same three tensors."""

    embeds: Tensor
    tokens: Tensor
    mask: Tensor


@torch.no_grad()
def sample_prior(
    prior: DiffusionPrior,
    text: TextLike,
    seeds: Sequence[int],
    *,
    steps: int = 64,
    sampler: Literal["ddim", "dpmpp", "unclip"] = "ddim",
    guidance: float = 1.0,
    best_of: int = 2,
    eta: float = 0.0,
    batch_size: int = 256,
    progress: bool = False,
    precision: Precision = "fp32",
) -> Tensor:
    """CLIP image embeddings [B, D] (float32, unit norm unless the CLIP's are raw, on the prior's device).

    `guidance` is the classifier-free guidance scale against the null caption (1.0: none, as the
    paper found best; Karlo uses 4.0). `best_of` candidates are drawn per caption and the one with
    the largest dot product with the caption's text embedding is kept. With a CLIP of raw embeddings
    (Karlo's, ClipSpec.normalise false) the embeddings are returned as the prior makes them, unnormalised.
    `precision`: fp32, bf16 (a bf16-weight copy; the sampler's arithmetic stays fp32) or auto (the faster here,
    asked once per batch shape: small batches are faster in fp32 on CPUs, core.precision).
    """
    embeds, tokens, mask = text.embeds, text.tokens, text.mask
    prior.check_text(embeds, tokens, mask)
    _check_settings(len(embeds), seeds, steps, sampler, guidance, best_of, eta, batch_size, prior)
    device = next(prior.parameters()).device
    was_training = prior.training
    prior.eval()
    try:
        out = []
        for start in range(0, len(embeds), batch_size):
            part = slice(start, start + batch_size)
            network = prior_in(prior, precision, len(embeds[part]) * best_of, guidance)
            out.append(_sample_chunk(prior, network, embeds[part].to(device), tokens[part].to(device),
                                     mask[part].to(device), list(seeds[part]), steps, sampler,
                                     guidance, best_of, eta, progress))
        return torch.cat(out)
    finally:
        prior.train(was_training)


def _sample_chunk(prior, network, embeds, tokens, mask, seeds, steps, sampler, guidance, best_of, eta,
                  progress) -> Tensor:
    """`network` (the prior or its bf16 copy) denoises; the prior's own fp32 statistics un-normalise."""
    b, d = embeds.shape
    n = best_of
    cond = {"text_embeds": embeds.float().repeat_interleave(n, 0), "tokens": tokens.float().repeat_interleave(n, 0),
            "mask": mask.bool().repeat_interleave(n, 0)}
    uncond = prior.null_condition(b * n)
    denoise = guided(network, cond, uncond, guidance)
    seeds_n = candidate_seeds(seeds, n)
    x = initial_noise(seeds_n, (d,), embeds.device)
    scheduler = sampling_scheduler(prior.config.noise, sampler, steps)
    x0 = sample(lambda x_t, t: denoise(x_t, t).float(), scheduler, x, seeds=seeds_n, eta=eta,
                progress=progress, desc="prior")
    candidates = prior.denormalise(x0)
    candidates = (F.normalize(candidates, dim=-1) if prior.unit_embeddings else candidates).view(b, n, d)
    return pick_best(candidates, dot_scores(candidates, embeds))[0]


def prior_in(prior: DiffusionPrior, precision: Precision, rows: int, guidance: float) -> DiffusionPrior:
    """The prior in `precision` for batches of `rows` candidates; `auto` times one step of each here."""
    device = next(prior.parameters()).device
    d, length, width = prior.config.embed_dim, prior.config.context_length, prior.config.text_width
    rows *= 1 if guidance == 1.0 else 2

    def probe(chosen: Resolved) -> None:
        x = torch.zeros(rows, d, device=device)
        with torch.inference_mode():
            inference_copy(prior, chosen)(x, torch.full((rows,), 500, device=device), x,
                                          torch.zeros(rows, length, width, device=device),
                                          torch.ones(rows, length, dtype=torch.bool, device=device))

    chosen = resolve(check_precision(precision), "prior", device, probe, key=(rows, prior.config.fingerprint()))
    return inference_copy(prior, chosen)


def _check_settings(count, seeds, steps, sampler, guidance, best_of, eta, batch_size, prior) -> None:
    if len(seeds) != count:
        raise ConfigError(f"{len(seeds)} seeds for {count} captions: give one seed per caption")
    if sampler not in ("ddim", "dpmpp", "unclip"):
        raise ConfigError(f"unknown prior sampler {sampler!r}; choose ddim, dpmpp or unclip")
    if not 1 <= steps <= prior.config.noise.train_steps:
        raise ConfigError(f"prior sampling steps must be between 1 and {prior.config.noise.train_steps}, got {steps}")
    if guidance < 0:
        raise ConfigError(f"guidance scale must be >= 0, got {guidance}")
    if best_of < 1 or batch_size < 1:
        raise ConfigError(f"best_of and batch_size must be at least 1, got {best_of} and {batch_size}")
    if eta < 0 or (eta > 0 and sampler != "ddim"):
        raise ConfigError(f"eta {eta}: only DDIM takes eta, and it must be >= 0")
