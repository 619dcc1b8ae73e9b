"""Loading the cascade from its model folders, after checking that the parts fit together.

`inspect_cascade` reads only the JSON beside the weights (ClipSpecs, configs), so a command line can
report mixed CLIPs, impossible sizes or step counts before any weights are read; `load_cascade`
then builds the networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from clip import ClipEncoder, ClipSpec, check_same_clip, load_encoder
from clip.spec import SPEC_FILE
from core.checkpoint import read_json
from core.config import Config
from core.errors import CheckpointError, ConfigError
from unclip.errors import ModelNotFoundError, SettingsError
from unclip.sources import TRAIN_HINT, Sources


@dataclass(frozen=True)
class CascadeInfo:
    """What the configs say: the CLIP, the resolution after each stage, each stage's noise steps, and the
    sampling defaults the models carry (upsamplers always; a prior or decoder where its config has them)."""

    spec: ClipSpec
    sizes: dict[str, int]  # decoder / upsampler1 / upsampler2 → output side
    train_steps: dict[str, int]
    default_steps: dict[str, int] = field(default_factory=dict)
    default_sampler: dict[str, str] = field(default_factory=dict)
    default_guidance: dict[str, float] = field(default_factory=dict)
    default_best_of: dict[str, int] = field(default_factory=dict)

    def stages_for(self, size: int | None) -> list[str]:
        """Stages to run for an output side (None: the largest); a side no stage produces is an error."""
        order = list(self.sizes)
        if size is None:
            return order
        for i, stage in enumerate(order):
            if self.sizes[stage] == size:
                return order[: i + 1]
        choices = ", ".join(str(s) for s in self.sizes.values())
        raise SettingsError(f"output size {size} is impossible with these models; choose one of {choices} "
                            f"(after {', '.join(order)})")


@dataclass
class Cascade:
    info: CascadeInfo
    sources: Sources
    encoder: ClipEncoder
    prior: torch.nn.Module
    decoder: torch.nn.Module
    upsamplers: dict[str, torch.nn.Module]


def inspect_cascade(sources: Sources) -> CascadeInfo:
    spec = _read_spec(sources["clip"].folder, "CLIP")
    for stage in ("prior", "decoder"):
        folder = sources[stage].folder
        check_same_clip(_read_spec(folder, stage), spec, f"the {stage} in {folder}")
    from decoder.config import DecoderConfig
    from decoder.io import CONFIG_FILE as DECODER_CONFIG
    from prior.config import PriorConfig
    from prior.io import CONFIG_FILE as PRIOR_CONFIG

    prior_cfg = _read_config(sources["prior"].folder, PRIOR_CONFIG, PriorConfig, "prior")
    decoder_cfg = _read_config(sources["decoder"].folder, DECODER_CONFIG, DecoderConfig, "decoder")
    sizes = {"decoder": decoder_cfg.image_size}
    train_steps = {"prior": prior_cfg.noise.train_steps, "decoder": decoder_cfg.noise.train_steps}
    defaults = {kind: {} for kind in ("steps", "sampler", "guidance", "best_of")}
    for stage, cfg in (("prior", prior_cfg), ("decoder", decoder_cfg)):
        for kind, value in cfg.sampling.model_dump().items():
            if value is not None:
                defaults[kind][stage] = value
    default_steps, default_sampler = defaults["steps"], defaults["sampler"]
    previous = "decoder"
    for stage in ("upsampler1", "upsampler2"):
        if stage not in sources:
            continue
        from upsamplers.io import read_config

        cfg = read_config(sources[stage].folder)
        if cfg.low_res != sizes[previous]:
            raise CheckpointError(f"the {stage} in {sources[stage].folder} takes {cfg.low_res}px images but the "
                                  f"{previous} makes {sizes[previous]}px ones: these models are not one cascade")
        sizes[stage] = cfg.high_res
        train_steps[stage] = cfg.noise.train_steps
        default_steps[stage] = cfg.sample_steps
        default_sampler[stage] = cfg.sampler
        previous = stage
    return CascadeInfo(spec, sizes, train_steps, default_steps, default_sampler, defaults["guidance"],
                       defaults["best_of"])


def load_cascade(sources: Sources, device: str | torch.device = "cpu", compile: bool = False) -> Cascade:
    """Every part on `device` in eval mode; `compile` wraps the networks' forward in torch.compile."""
    from prior.io import load_prior
    from upsamplers.io import load_upsampler

    info = inspect_cascade(sources)
    device = torch.device(device)
    # the CLIP folder's own files, checked against the sha256 of its spec: never the files training left
    encoder = load_encoder(ClipSpec.load(sources["clip"].folder, own_files=True), device)
    prior = load_prior(sources["prior"].folder, expected_spec=info.spec, device=device)
    decoder = _load_decoder(sources["decoder"].folder, info.spec, device)
    ups = {stage: load_upsampler(sources[stage].folder, device) for stage in ("upsampler1", "upsampler2")
           if stage in sources}
    if compile:
        for net in (prior.prior, decoder.unet, *(u.unet for u in ups.values())):
            net.compile()
    return Cascade(info, sources, encoder, prior, decoder, ups)


def _load_decoder(folder: Path, spec: ClipSpec, device: torch.device):
    from decoder.io import load_decoder

    decoder, _ = load_decoder(folder, clip_spec=spec, device=device)
    return decoder


def _read_spec(folder: Path, what: str) -> ClipSpec:
    if not (folder / SPEC_FILE).is_file():
        raise ModelNotFoundError(f"{folder} has no {SPEC_FILE}: not a {what} model folder; {TRAIN_HINT}")
    return ClipSpec.load(folder)


def _read_config(folder: Path, name: str, kind: type[Config], what: str) -> Config:
    if not (folder / name).is_file():
        raise ModelNotFoundError(f"{folder} has no {name}: not a {what} model folder; {TRAIN_HINT}")
    try:
        return kind.parse(read_json(folder / name))
    except ConfigError as err:
        raise CheckpointError(f"{folder / name}: {err}") from None

