"""`UnclipPipeline`: CLIP text encoder → prior → decoder → upsampler 1 → upsampler 2, for inference.

    pipe = UnclipPipeline.from_folders(clip="runs/clip/model", prior=..., decoder=..., upsampler1=...)
    pipe = UnclipPipeline.from_registry()                      # every stage's `champion`
    images = pipe.generate(["a red circle ..."], num_images=4, seed=0, steps={"decoder": 50})

Image k of a call (prompt-major) uses seed `seed + k` for every stage, drawn by its own generators,
so an image never depends on the batch it was made in. Every returned PIL image carries its
provenance in `image.info["unclip"]` (see unclip.provenance). The stages themselves: unclip.stages;
manipulations: unclip.manipulate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from unclip import manipulate, sources
from unclip.errors import SettingsError
from unclip.images import tensor_to_images
from unclip.loading import CascadeInfo, load_cascade
from unclip.provenance import attach
from unclip.settings import DEFAULT_DECODER_BEST_OF, DEFAULT_PRIOR_BEST_OF
from unclip.stages import CascadeStages, SamplingPlan, check_prompts, select_rows


class UnclipPipeline(CascadeStages):
    """Text to image on the cascade's stages, and the manipulations of unclip.manipulate."""

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

    # -- text to image -----------------------------------------------------------------------
    def generate(self, prompts: str | Sequence[str], num_images: int = 1, seed: int = 0,
                 steps: Mapping[str, Any] | None = None, guidance: Mapping[str, Any] | None = None,
                 sampler: str | Mapping[str, str] | None = None, output_size: int | None = None,
                 prior_best_of: int | None = None, batch_size: int = 8,
                 decoder_best_of: int | None = None) -> list[Image.Image]:
        """`num_images` images per prompt at `output_size` (None: the largest), prompt-major. `prior_best_of`
        prior candidates per image (the one closest to the caption kept, as the paper), `decoder_best_of`
        decodes of the kept embedding (the one CLIP reads closest to it kept; 1: the paper's single decode;
        the default's figures: docs/experiments/sampling.md). Settings left None take the models' own
        defaults where they carry some, else the cascade's (unclip/settings.py)."""
        prompts = check_prompts(prompts)
        if num_images < 1 or batch_size < 1:
            raise SettingsError(f"num_images and batch_size must be at least 1, got {num_images} and {batch_size}")
        prior_best_of, decoder_best_of = best_of_for(self.info, prior_best_of, decoder_best_of)
        plan = self.plan(steps, guidance, sampler, output_size)
        images = self.generate_tensors(prompts, num_images, seed, plan, prior_best_of, batch_size, decoder_best_of)
        out = []
        for k, image in enumerate(tensor_to_images(images)):
            record = {"task": "generate", "prompt": prompts[k // num_images], "seed": seed + k,
                      "prior_best_of": prior_best_of, "decoder_best_of": decoder_best_of}
            out.append(attach(image, {**record, **self.record(plan)}))
        return out

    @torch.inference_mode()
    def generate_tensors(self, prompts: list[str], num_images: int, seed: int, plan: SamplingPlan,
                         prior_best_of: int | None = None, batch_size: int = 8,
                         decoder_best_of: int | None = None) -> Tensor:
        """[len(prompts) * num_images, 3, S, S] in [-1, 1]."""
        prior_best_of, decoder_best_of = best_of_for(self.info, prior_best_of, decoder_best_of)
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
            z = self.sample_prior(part, seeds, plan, prior_best_of)
            with self.timed("decoder"):
                x = self.decode(z, part, seeds, plan, decoder_best_of=decoder_best_of)
            chunks.append(self.upsample(x, seeds, plan))
        return torch.cat(chunks)

    # -- manipulations (unclip.manipulate) ------------------------------------------------------
    def variations(self, image, n: int = 4, eta: float = 0.5, **kw: Any) -> list[Image.Image]:
        return manipulate.variations(self, image, n, eta, **kw)

    def interpolate(self, image_a, image_b, steps: int = 5, noise: str = "slerp", **kw: Any) -> list[Image.Image]:
        return manipulate.interpolate(self, image_a, image_b, steps, noise, **kw)

    def text_diff(self, image, from_caption: str, to_caption: str,
                  thetas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), **kw: Any) -> list[Image.Image]:
        return manipulate.text_diff(self, image, from_caption, to_caption, thetas, **kw)


def best_of_for(info: CascadeInfo, prior_best_of: int | None, decoder_best_of: int | None) -> tuple[int, int]:
    """(prior candidates, decodes) per image: the given ones, else the models' own, else the cascade's;
    a CLIP without an image tower cannot rank decodes, so its default is a single one."""
    if prior_best_of is None:
        prior_best_of = info.default_best_of.get("prior", DEFAULT_PRIOR_BEST_OF)
    if decoder_best_of is None:
        own = info.default_best_of.get("decoder", DEFAULT_DECODER_BEST_OF)
        decoder_best_of = own if info.spec.has_image_tower else 1  # no image tower: nothing ranks the decodes
    if prior_best_of < 1 or decoder_best_of < 1:
        raise SettingsError(f"prior_best_of and decoder_best_of must be at least 1, got {prior_best_of} and "
                            f"{decoder_best_of}")
    return prior_best_of, decoder_best_of

