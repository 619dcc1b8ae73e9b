"""`UnclipPipeline`: CLIP text encoder → prior → decoder → upsampler 1 → upsampler 2, for inference.

    pipe = UnclipPipeline.from_folders(clip="runs/clip/model", prior=..., decoder=..., upsampler1=...)
    pipe = UnclipPipeline.from_registry()                      # every stage's `champion`
    images = pipe.generate(["a red circle ..."], num_images=4, seed=0, steps={"decoder": 50})

Image k of a call (prompt-major) uses seed `seed + k` for every stage, drawn by its own generators,
so an image never depends on the batch it was made in. Every returned PIL image carries its
provenance in `image.info["unclip"]` (see unclip.provenance). Manipulations: unclip.manipulate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from core.memory import keep_freed_memory
from core.precision import PRECISIONS
from core.seeds import stream_seed
from unclip import sources
from unclip.errors import PromptError, SettingsError
from unclip.images import tensor_to_images
from unclip.loading import Cascade, CascadeInfo, load_cascade
from unclip.provenance import attach
from unclip.settings import (
    DEFAULT_DECODER_BEST_OF,
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    check_steps,
    guidance_for,
    samplers_for,
    steps_for,
)

DEFAULT_PRIOR_BEST_OF = 2  # the paper's

log = logging.getLogger("unclip")

def check_precision(precision: str) -> str:
    """fp32; bf16 (each stage in bf16 weights, the samplers' arithmetic in fp32); auto: per stage the faster of
    the two on this machine and at this batch size (core.precision; small batches often run faster in fp32)."""
    if precision not in PRECISIONS:
        raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def stage_seeds(seeds: Sequence[int], stage: str) -> list[int]:
    """Each stage draws from its own stream of the image's seed (the prior from the seed itself)."""
    return [int(s) if stage == "prior" else stream_seed(s, stage) for s in seeds]


class UnclipPipeline:
    def __init__(self, cascade: Cascade, precision: str = "fp32", progress: bool = True) -> None:
        check_precision(precision)
        keep_freed_memory()
        self.cascade = cascade
        self.info = cascade.info
        self.precision = precision
        self.progress = progress
        self.device = next(cascade.decoder.parameters()).device
        self.timings: dict[str, float] = {}

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_sources(cls, found: sources.Sources, *, device: str | torch.device = "cpu", precision: str = "fp32",
                     compile: bool = False, progress: bool = True) -> UnclipPipeline:
        return cls(load_cascade(found, device, compile), precision, progress)

    @classmethod
    def from_folders(cls, clip: str | Path, prior: str | Path, decoder: str | Path,
                     upsampler1: str | Path | None = None, upsampler2: str | Path | None = None,
                     **kw: Any) -> UnclipPipeline:
        return cls.from_sources(sources.from_folders(clip, prior, decoder, upsampler1, upsampler2), **kw)

    @classmethod
    def from_models_dir(cls, root: str | Path, **kw: Any) -> UnclipPipeline:
        """A folder with subfolders clip/ prior/ decoder/ [upsampler1/ [upsampler2/]]."""
        return cls.from_sources(sources.from_models_dir(root), **kw)

    @classmethod
    def from_registry(cls, ref: str | int = "champion", versions: Mapping[str, str | int] | None = None,
                      **kw: Any) -> UnclipPipeline:
        """Every stage's registered model by alias (or a version per stage in `versions`)."""
        return cls.from_sources(sources.from_registry(ref, versions), **kw)

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

    # -- text to image -----------------------------------------------------------------------
    def generate(self, prompts: str | Sequence[str], num_images: int = 1, seed: int = 0,
                 steps: Mapping[str, Any] | None = None, guidance: Mapping[str, Any] | None = None,
                 sampler: str | Mapping[str, str] | None = None, output_size: int | None = None,
                 best_of: int | None = None, batch_size: int = 8,
                 decoder_best_of: int | None = None) -> list[Image.Image]:
        """`num_images` images per prompt at `output_size` (None: the largest), prompt-major. `best_of`
        prior candidates per image (the one closest to the caption kept, as the paper), `decoder_best_of`
        decodes of the kept embedding (the one CLIP reads closest to it kept; 1: the paper's single decode;
        the default's figures are in unclip/settings.py). Settings left None take the models' own
        defaults where they carry some, else the cascade's (unclip/settings.py)."""
        prompts = check_prompts(prompts)
        if num_images < 1 or batch_size < 1:
            raise SettingsError(f"num_images and batch_size must be at least 1, got {num_images} and {batch_size}")
        best_of, decoder_best_of = best_of_for(self.info, best_of, decoder_best_of)
        plan = self.plan(steps, guidance, sampler, output_size)
        images = self.generate_tensors(prompts, num_images, seed, plan, best_of, batch_size, decoder_best_of)
        out = []
        for k, image in enumerate(tensor_to_images(images)):
            record = {"task": "generate", "prompt": prompts[k // num_images], "seed": seed + k, "best_of": best_of,
                      "decoder_best_of": decoder_best_of}
            out.append(attach(image, {**record, **self.record(plan)}))
        return out

    @torch.inference_mode()
    def generate_tensors(self, prompts: list[str], num_images: int, seed: int, plan: dict,
                         best_of: int | None = None, batch_size: int = 8,
                         decoder_best_of: int | None = None) -> Tensor:
        """[len(prompts) * num_images, 3, S, S] in [-1, 1]."""
        best_of, decoder_best_of = best_of_for(self.info, best_of, decoder_best_of)
        self.timings = {}
        with self.timed("clip"):
            text = self.encode_text(prompts)
        order = [i for i in range(len(prompts)) for _ in range(num_images)]
        all_seeds = [seed + k for k in range(len(order))]
        chunks = []
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            seeds = all_seeds[start:start + batch_size]
            part = select_rows(text, idx)
            z = self.sample_prior(part, seeds, plan, best_of)
            with self.timed("decoder"):
                x = self.decode(z, part, seeds, plan, best_of=decoder_best_of)
            chunks.append(self.upsample(x, seeds, plan))
        return torch.cat(chunks)

    # -- stages (also used by the manipulations) ----------------------------------------------
    def plan(self, steps=None, guidance=None, sampler=None, output_size=None,
             guidance_defaults: Mapping[str, float] | None = None) -> dict:
        return make_plan(self.info, steps, guidance, sampler, output_size, guidance_defaults)

    def record(self, plan: dict) -> dict[str, Any]:
        """The provenance fields every output of `plan` shares."""
        return {"steps": plan["steps"], "guidance": plan["guidance"], "sampler": plan["sampler"],
                "output_size": plan["output_size"], "precision": self.precision, "models": self.models(),
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

    def sample_prior(self, text, seeds: Sequence[int], plan: dict, best_of: int = 2) -> Tensor:
        """Image embeddings [B, D] the prior draws for encoded captions, one seed each."""
        from prior.sample import sample_prior

        with self.timed("prior"):
            return sample_prior(self.cascade.prior, text, stage_seeds(seeds, "prior"), steps=plan["steps"]["prior"],
                                sampler=plan["sampler"]["prior"], guidance=plan["guidance"]["prior"],
                                best_of=best_of, progress=self.progress, precision=self.precision)

    def decode(self, image_embeds: Tensor, text, seeds: Sequence[int], plan: dict, x_t: Tensor | None = None,
               eta: float = 0.0, blend=None, best_of: int = 1) -> Tensor:
        """Decoder images [B, 3, S, S] for image embeddings (and captions, or None), from x_T (default:
        the seeds' noise); `blend`: see decoder.sample.decode; `best_of` > 1: that many decodes each, the
        one CLIP reads closest to its embedding kept (decoder.best_of)."""
        from decoder.best_of import decode_best_of
        from decoder.sample import decode

        settings = {"steps": plan["steps"]["decoder"], "sampler": plan["sampler"]["decoder"],
                    "guidance": plan["guidance"]["decoder"], "eta": eta, "progress": self.progress,
                    "precision": self.precision}
        if best_of > 1:
            return decode_best_of(self.cascade.decoder, self.cascade.encoder.encode_pixels, image_embeds, text,
                                  stage_seeds(seeds, "decoder"), best_of, x_T=x_t, blend=blend, **settings).images
        return decode(self.cascade.decoder, image_embeds, text, stage_seeds(seeds, "decoder"), x_T=x_t,
                      blend=blend, **settings)

    def invert(self, x0: Tensor, image_embeds: Tensor, plan: dict, text=None) -> Tensor:
        """x_T of decoder-sized images under their image embeddings (and captions, default none); decoding
        it with DDIM (η = 0), the same conditions and the plan's decoder steps and guidance gives the
        images back."""
        from decoder.sample import invert

        return invert(self.cascade.decoder, x0, image_embeds, text, steps=plan["steps"]["decoder"],
                      guidance=plan["guidance"]["decoder"], progress=self.progress, precision=self.precision)

    def upsample(self, x: Tensor, seeds: Sequence[int], plan: dict) -> Tensor:
        from upsamplers.sample import upsample

        for stage in plan["stages"][1:]:
            with self.timed(stage):
                x = upsample(self.cascade.upsamplers[stage], x, steps=plan["steps"][stage],
                             sampler=plan["sampler"][stage], seeds=stage_seeds(seeds, stage),
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

    # -- manipulations (unclip.manipulate) ------------------------------------------------------
    def variations(self, image, n: int = 4, eta: float = 0.5, **kw: Any) -> list[Image.Image]:
        from unclip.manipulate import variations

        return variations(self, image, n, eta, **kw)

    def interpolate(self, image_a, image_b, steps: int = 5, noise: str = "slerp", **kw: Any) -> list[Image.Image]:
        from unclip.manipulate import interpolate

        return interpolate(self, image_a, image_b, steps, noise, **kw)

    def text_diff(self, image, from_caption: str, to_caption: str,
                  thetas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), **kw: Any) -> list[Image.Image]:
        from unclip.manipulate import text_diff

        return text_diff(self, image, from_caption, to_caption, thetas, **kw)


def make_plan(info: CascadeInfo, steps=None, guidance=None, sampler=None, output_size=None,
              guidance_defaults: Mapping[str, float] | None = None) -> dict:
    """Resolved settings: steps, guidance and sampler per stage, the stages to run, the output side;
    needs only the configs (CascadeInfo), so command lines check settings before loading weights.
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
    return {"steps": resolved_steps, "guidance": guidance_for(guidance, guidance_defaults), "sampler": samplers,
            "stages": stages, "output_size": info.sizes[stages[-1]]}


def best_of_for(info: CascadeInfo, best_of: int | None, decoder_best_of: int | None) -> tuple[int, int]:
    """(prior candidates, decodes) per image: the given ones, else the models' own, else the cascade's;
    a CLIP without an image tower cannot rank decodes, so its default is a single one."""
    if best_of is None:
        best_of = info.default_best_of.get("prior", DEFAULT_PRIOR_BEST_OF)
    if decoder_best_of is None:
        fallback = DEFAULT_DECODER_BEST_OF if info.spec.has_image_tower else 1
        decoder_best_of = info.default_best_of.get("decoder", fallback)
    if best_of < 1 or decoder_best_of < 1:
        raise SettingsError(f"best_of and decoder_best_of must be at least 1, got {best_of} and {decoder_best_of}")
    return best_of, decoder_best_of


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
