"""Configuration of the diffusion prior: network sizes, noise process, guidance dropout, normalisation.

The network is diffusers' `PriorTransformer` (the DALL-E 2 / Karlo prior); the CLIP-dependent
sizes (`embed_dim`, `context_length`, `text_width`) may be left unset in a preset and are then
taken from the CLIP the training shards were embedded with (`for_clip`).
"""

from __future__ import annotations

import math
from typing import Literal, Self

from pydantic import Field, model_validator

from core.config import Config
from core.diffusion import NoiseConfig, SamplingDefaults
from core.errors import ConfigError

Normalisation = Literal["standardise", "l2_scale"]


class PriorConfig(Config):
    """Everything needed to rebuild a prior; stored beside its weights as `prior_config.json`."""

    embed_dim: int | None = Field(None, gt=0, description="CLIP embedding size D (None: from the CLIP)")
    context_length: int | None = Field(None, gt=0, description="caption tokens L (None: from the CLIP)")
    text_width: int | None = Field(None, gt=0, description="caption token width W (None: from the CLIP)")
    heads: int = Field(4, gt=0)
    head_dim: int = Field(64, gt=0, description="width of the transformer = heads * head_dim")
    layers: int = Field(4, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    norm_in: bool = Field(False, description="LayerNorm on the token sequence before the blocks (Karlo: off)")
    noise: NoiseConfig = NoiseConfig(schedule="cosine", prediction="sample", train_steps=1000)
    cond_drop: float = Field(0.1, ge=0, lt=1, description="rate at which the caption is replaced by the null")
    normalise: Normalisation = Field(
        "standardise",
        description="standardise: (z - mean) / std with the shards' per-dimension stats (Karlo); "
                    "l2_scale: z * embed_scale (the paper: 17.2)")
    embed_scale: float | None = Field(None, gt=0, description="l2_scale factor (None: sqrt(embed_dim))")
    null_caption: Literal["learned", "empty_caption"] = Field(
        "learned", description="the unconditional branch's caption: learned (every null token visible, as "
        "DALLE2-pytorch), or CLIP's encoding of the empty caption with its mask, fixed (diffusers' unCLIP pipeline "
        "and Karlo; unclip.convert sets it)")
    sampling: SamplingDefaults = Field(SamplingDefaults(), description="this prior's own sampling defaults")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.embed_scale is not None and self.normalise != "l2_scale":
            raise ValueError("embed_scale is only used with normalise='l2_scale'")
        return self

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    @property
    def complete(self) -> bool:
        return None not in (self.embed_dim, self.context_length, self.text_width)

    def for_clip(self, embed_dim: int, context_length: int, text_width: int) -> PriorConfig:
        """Fill the CLIP-dependent sizes; a size set by hand that disagrees with the CLIP is an error."""
        given = {"embed_dim": embed_dim, "context_length": context_length, "text_width": text_width}
        for name, value in given.items():
            mine = getattr(self, name)
            if mine is not None and mine != value:
                raise ConfigError(f"prior.{name}={mine} but the CLIP of the embeddings has {name}={value}; "
                                  f"leave prior.{name} unset to take it from the CLIP")
        return self.override(**given)

    def scale(self) -> float:
        """The l2_scale factor."""
        if self.embed_dim is None:
            raise ConfigError("embed_dim is unset: call PriorConfig.for_clip first")
        return self.embed_scale if self.embed_scale is not None else math.sqrt(self.embed_dim)


class PriorEvalConfig(Config):
    """How the prior is sampled and scored on held-out pairs (see prior.evaluate)."""

    size: int = Field(1000, gt=1, description="held-out pairs scored (N of the retrieval)")
    sampler: Literal["ddim", "dpmpp"] = "ddim"
    steps: int = Field(64, gt=0)
    guidance: float = Field(1.0, ge=0)
    prior_best_of: int = Field(2, gt=0, description="candidates per caption; the one closest to its text embedding is kept")
    zeroshot: bool = Field(True, description="the dataset probe's zero-shot figures, where the dataset has one")
    seed: int = 0


# Widths scale the design down, not the design: same token layout, objective and schedule.
PRIOR_PRESETS: dict[str, PriorConfig] = {
    "smoke": PriorConfig(heads=2, head_dim=16, layers=1),
    # For the demo CLIP (embed 128, caption tokens 16 × 128); trains on 2 CPU cores in minutes.
    "demo": PriorConfig(heads=4, head_dim=32, layers=4),
    "base": PriorConfig(heads=12, head_dim=64, layers=12),
    # DALL-E 2: width 2048, 24 blocks (~1B parameters with a ViT-H CLIP); Karlo: 32 x 64, 20 blocks.
    "paper": PriorConfig(heads=32, head_dim=64, layers=24),
}
