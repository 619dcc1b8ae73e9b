"""The cascade's stages, one call each: CLIP's text encoding, the prior, the decoder (and its DDIM
inversion) and the upsamplers, on a loaded `Cascade`, with the sampling plan they follow.

`UnclipPipeline` (unclip.pipeline) builds text-to-image on these; the manipulations
(unclip.manipulate) build variations, interpolations and text diffs on the same calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from core.memory import keep_freed_memory
from core.precision import check_precision
from core.seeds import stream_seed
from unclip.errors import PromptError
from unclip.loading import Cascade, CascadeInfo
from unclip.settings import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    check_steps,
    guidance_for,
    samplers_for,
    steps_for,
)

log = logging.getLogger("unclip")


@dataclass(frozen=True)
class SamplingPlan:
    """Resolved settings of one call: steps, guidance and sampler per stage (upsamplers only where they
    run), the stages to run after the prior, and the side of the output images."""

    steps: dict[str, int | None]
    guidance: dict[str, float]
    sampler: dict[str, str | None]
    stages: tuple[str, ...]
    output_size: int


def stage_seeds(seeds: Sequence[int], stage: str) -> list[int]:
    """Each stage draws from its own stream of the image's seed (the prior from the seed itself)."""
    return [int(s) if stage == "prior" else stream_seed(s, stage) for s in seeds]


class CascadeStages:
    """A loaded cascade's stages on its device, under one precision; `timings` holds the wall time of
    each stage in the last call."""

    def __init__(self, cascade: Cascade, precision: str = "fp32", progress: bool = True) -> None:
        check_precision(precision)
        keep_freed_memory()
        self.cascade = cascade
        self.info = cascade.info
        self.precision = precision
        self.progress = progress
        self.device = next(cascade.decoder.parameters()).device
        self.timings: dict[str, float] = {}

    # -- properties --------------------------------------------------------------------------
    @property
    def encoder(self):
        return self.cascade.encoder

    @property
    def sizes(self) -> list[int]:
        """The output sides this cascade can produce (after the decoder and each upsampler)."""
        return list(self.info.sizes.values())

    def models(self) -> dict[str, dict[str, str | None]]:
        return {stage: src.describe() for stage, src in self.cascade.sources.items()}

    # -- stages (also used by the manipulations) ----------------------------------------------
    def plan(self, steps=None, guidance=None, sampler=None, output_size=None,
             guidance_defaults: Mapping[str, float] | None = None) -> SamplingPlan:
        return make_plan(self.info, steps, guidance, sampler, output_size, guidance_defaults)

    def record(self, plan: SamplingPlan) -> dict[str, Any]:
        """The provenance fields every output of `plan` shares."""
        return {"steps": plan.steps, "guidance": plan.guidance, "sampler": plan.sampler,
                "output_size": plan.output_size, "precision": self.precision, "models": self.models(),
                "clip_fingerprint": self.info.spec.fingerprint()}

    def encode_text(self, captions: list[str]):
        """CLIP's encoding of the captions; too-long captions are truncated with a warning."""
        encoder = self.cascade.encoder
        _, truncated = encoder.tokenize(captions)
        for caption, cut in zip(captions, truncated):
            if cut:
                log.warning("prompt %r is longer than CLIP's context of %d tokens: truncated",
                            caption if len(caption) < 60 else caption[:57] + "...", encoder.context_length)
        return encoder.encode_text(captions)

    def sample_prior(self, text, seeds: Sequence[int], plan: SamplingPlan, prior_best_of: int = 2) -> Tensor:
        """Image embeddings [B, D] the prior draws for encoded captions, one seed each (the best of
        `prior_best_of` candidates: the one closest to the caption)."""
        from prior.sample import sample_prior

        with self.timed("prior"):
            return sample_prior(self.cascade.prior, text, stage_seeds(seeds, "prior"), steps=plan.steps["prior"],
                                sampler=plan.sampler["prior"], guidance=plan.guidance["prior"],
                                best_of=prior_best_of, progress=self.progress, precision=self.precision)

    def decode(self, image_embeds: Tensor, text, seeds: Sequence[int], plan: SamplingPlan, x_t: Tensor | None = None,
               eta: float = 0.0, blend=None, decoder_best_of: int = 1) -> Tensor:
        """Decoder images [B, 3, S, S] for image embeddings (and captions, or None), from x_T (default:
        the seeds' noise); `blend`: see decoder.sample.decode; `decoder_best_of` > 1: that many decodes each, the
        one CLIP reads closest to its embedding kept (decoder.best_of)."""
        from decoder.best_of import decode_best_of
        from decoder.sample import decode

        settings = {"steps": plan.steps["decoder"], "sampler": plan.sampler["decoder"],
                    "guidance": plan.guidance["decoder"], "eta": eta, "progress": self.progress,
                    "precision": self.precision}
        if decoder_best_of > 1:
            return decode_best_of(self.cascade.decoder, self.cascade.encoder.encode_pixels, image_embeds, text,
                                  stage_seeds(seeds, "decoder"), decoder_best_of, x_T=x_t, blend=blend,
                                  **settings).images
        return decode(self.cascade.decoder, image_embeds, text, stage_seeds(seeds, "decoder"), x_T=x_t,
                      blend=blend, **settings)

    def invert(self, x0: Tensor, image_embeds: Tensor, plan: SamplingPlan, text=None) -> Tensor:
        """x_T of decoder-sized images under their image embeddings (and captions, default none); decoding
        it with DDIM (η = 0), the same conditions and the plan's decoder steps and guidance gives the
        images back."""
        from decoder.sample import invert

        return invert(self.cascade.decoder, x0, image_embeds, text, steps=plan.steps["decoder"],
                      guidance=plan.guidance["decoder"], progress=self.progress, precision=self.precision)

    def upsample(self, x: Tensor, seeds: Sequence[int], plan: SamplingPlan) -> Tensor:
        from upsamplers.sample import upsample

        for stage in plan.stages[1:]:
            with self.timed(stage):
                x = upsample(self.cascade.upsamplers[stage], x, steps=plan.steps[stage],
                             sampler=plan.sampler[stage], seeds=stage_seeds(seeds, stage),
                             precision=self.precision, progress=self.progress)
        return x

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall time of the block to `self.timings[stage]` (synchronising CUDA first)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        log.info("%s: %.2fs", stage, seconds)


def make_plan(info: CascadeInfo, steps=None, guidance=None, sampler=None, output_size=None,
              guidance_defaults: Mapping[str, float] | None = None) -> SamplingPlan:
    """The plan of a call; needs only the configs (CascadeInfo), so command lines check settings before loading weights.
    What the user leaves unset comes from the models' own defaults, then the cascade's; given
    `guidance_defaults` (the manipulations' unguided decode) replace both for guidance."""
    stages = info.stages_for(output_size)
    resolved_steps = steps_for(steps, {**DEFAULT_STEPS, **info.default_steps})
    samplers = samplers_for(sampler, {**DEFAULT_SAMPLER, **info.default_sampler})
    if guidance_defaults is None:
        guidance_defaults = {**DEFAULT_GUIDANCE, **info.default_guidance}
    for stage in ("upsampler1", "upsampler2"):
        if stage in stages:
            resolved_steps[stage] = resolved_steps[stage] or info.default_steps[stage]
            samplers[stage] = samplers[stage] or info.default_sampler[stage]
        else:
            resolved_steps.pop(stage)
            samplers.pop(stage)
    for stage, n in resolved_steps.items():
        check_steps(stage, n, info.train_steps[stage])
    return SamplingPlan(resolved_steps, guidance_for(guidance, guidance_defaults), samplers, tuple(stages),
                        info.sizes[stages[-1]])


def check_prompts(prompts: str | Sequence[str], what: str = "prompt") -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise PromptError(f"no {what} given")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise PromptError(f"{what} {i + 1} is a {type(prompt).__name__}, not text")
        if not prompt.strip():
            raise PromptError(f"{what} {i + 1} is empty" if len(prompts) > 1 else f"the {what} is empty")
    return [p.strip() for p in prompts]


def select_rows(text, idx: list[int]):
    """The rows `idx` (repeats allowed) of an encoded caption batch."""
    index = torch.tensor(idx, device=text.embeds.device)
    return type(text)(text.embeds[index], text.tokens[index], text.mask[index])
