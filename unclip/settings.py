"""Per-stage sampling settings: defaults, overrides and the `stage=value,...` form of the command lines.

Steps follow Karlo and diffusers' UnCLIPPipeline (prior 25 / decoder 25); guidance is the paper's
unguided prior, and an unguided decoder for the demo's models (docs/experiments/sampling.md; the
paper's decoder 1.25 and Karlo's 4 / 8 are one override away);
an upsampler's steps and sampler default to those stored in its own config (the paper's 27 and 15
DDIM steps for the `paper` preset). The upsamplers take no guidance. A prior or decoder that carries
its own sampling defaults (`sampling` in its config: a converted Karlo model's 25 / 25 steps, guidance
4 / 8, the unclip sampler, one candidate) uses them where the user gives none; these constants are
for the models that carry none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from unclip.errors import SettingsError

SAMPLED = ("prior", "decoder", "upsampler1", "upsampler2")
GUIDED = ("prior", "decoder")
SAMPLERS = ("ddim", "dpmpp", "ddpm", "unclip")

DEFAULT_STEPS: dict[str, int | None] = {"prior": 25, "decoder": 25, "upsampler1": None, "upsampler2": None}
# Unguided, as the paper's prior: Karlo's 4 / 8 over-saturate the small demo models, and decoder guidance
# 1.0 read shape best and samples twice as fast (docs/experiments/sampling.md); larger decoders may want 1.25.
DEFAULT_GUIDANCE: dict[str, float] = {"prior": 1.0, "decoder": 1.0}
# The paper and Karlo guide at 10 or less; far above it every image saturates, and at 1e30 the
# guided noise overflows and decodes to black.
MAX_GUIDANCE = 50.0
# Decodes per generated image for a decoder that carries no default of its own (converted weights), the
# one whose CLIP embedding comes back closest to the prior's kept (decoder/best_of.py): the paper's single
# decode; more helped on shapes only (docs/experiments/sampling.md), whose decoders save 4.
DEFAULT_DECODER_BEST_OF = 1
# Prior candidates per generated image, the one closest to the caption kept: the paper's best of 2.
DEFAULT_PRIOR_BEST_OF = 2
# Inversion-based manipulations decode with the same (unguided) network that inverted the image, so
# that η = 0 gives the image back; guidance > 1 breaks that symmetry.
MANIPULATION_GUIDANCE: dict[str, float] = {"prior": 1.0, "decoder": 1.0}
# Text diffs keep the best of this many decodes of each edited frame: the paper's η = 0 decode and
# η = EDIT_BEST_OF_ETA ones from the same inverted x_T, ranked by CLIP against z_θ (unclip/manipulate.py;
# docs/experiments/manipulations.md). 1 is the paper's single η = 0 decode.
DEFAULT_EDIT_BEST_OF = 4
EDIT_BEST_OF_ETA = 0.5
DEFAULT_SAMPLER: dict[str, str | None] = {"prior": "ddim", "decoder": "ddim", "upsampler1": None, "upsampler2": None}


def parse_stage_values(text: str | None, stages: tuple[str, ...], kind: str) -> dict[str, str]:
    """`"prior=25,decoder=50"` → {"prior": "25", "decoder": "50"}; a bare value applies to every stage."""
    if text is None or not text.strip():
        return {}
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            return {stage: key.strip() for stage in stages}
        key = key.strip()
        if key not in stages:
            raise SettingsError(f"--{kind}: unknown stage {key!r}; stages are {', '.join(stages)}")
        out[key] = value.strip()
    return out


def steps_for(overrides: Mapping[str, Any] | None,
              defaults: Mapping[str, int | None] = DEFAULT_STEPS) -> dict[str, int | None]:
    steps = dict(defaults)
    for stage, value in _known(overrides, SAMPLED, "steps").items():
        steps[stage] = None if value is None else _int(value, f"{stage} steps")
    return steps


def guidance_for(overrides: Mapping[str, Any] | None, defaults: Mapping[str, float] = DEFAULT_GUIDANCE) -> dict[str, float]:
    guidance = dict(defaults)
    for stage, value in _known(overrides, GUIDED, "guidance").items():
        scale = _float(value, f"{stage} guidance")
        low = 1.0 if stage == "decoder" else 0.0  # the decoder guides ε only, from 1 (unguided) up
        if not low <= scale <= MAX_GUIDANCE:
            raise SettingsError(f"{stage} guidance must lie in [{low:g}, {MAX_GUIDANCE:g}] (1 = unguided), got {scale}")
        guidance[stage] = scale
    return guidance


def samplers_for(sampler: str | Mapping[str, Any] | None,
                 defaults: Mapping[str, str | None] = DEFAULT_SAMPLER) -> dict[str, str | None]:
    samplers = dict(defaults)
    given = {stage: sampler for stage in SAMPLED} if isinstance(sampler, str) else _known(sampler, SAMPLED, "sampler")
    for stage, name in given.items():
        if name not in SAMPLERS:
            raise SettingsError(f"unknown sampler {name!r} for {stage}; choose {', '.join(SAMPLERS)}")
        if stage == "prior" and name == "ddpm":
            if isinstance(sampler, str):
                continue  # one sampler for every stage: the prior keeps DDIM, it has no DDPM sampler
            raise SettingsError("the prior samples with ddim or dpmpp, not ddpm")
        samplers[stage] = name
    return samplers


def check_steps(stage: str, steps: int | None, train_steps: int) -> None:
    if steps is not None and not 1 <= steps <= train_steps:
        raise SettingsError(f"{stage} steps must be between 1 and {train_steps} (its training steps), got {steps}")


def _known(values: Mapping[str, Any] | None, stages: tuple[str, ...], kind: str) -> dict[str, Any]:
    values = dict(values or {})
    unknown = sorted(set(values) - set(stages))
    if unknown:
        raise SettingsError(f"{kind}: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(stages)}")
    return values


def _int(value: Any, what: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{what} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise SettingsError(f"{what} must be a whole number, got {value!r}")
    if number < 1:
        raise SettingsError(f"{what} must be at least 1, got {value!r}")
    return int(number)


def _float(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{what} must be finite, got {value!r}")
    return number
