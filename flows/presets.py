"""One preset name for the whole cascade: each stage's own preset of the same name."""

from __future__ import annotations

from pydantic import Field, model_validator

from clip.config import ClipTrainSettings
from clip.config import settings_for as clip_settings
from core.config import Config, apply_overrides
from core.errors import ConfigError
from data.config import SOURCES
from decoder.config import DecoderSettings
from decoder.config import settings_for as decoder_settings
from prior.train import PriorTrainSettings
from prior.train import settings_for as prior_settings
from upsamplers.config import UpsamplerTrainSettings
from upsamplers.config import settings_for as upsampler_settings

CASCADE_PRESETS = ("smoke", "demo", "base", "paper")
# The stages that read images; `data.<key>=<value>` sets the key in each of them.
DATA_STAGES = ("clip", "upsampler1", "upsampler2")
# The data each preset trains on unless told otherwise: the built-in real dataset, except for the smoke
# preset, whose procedural shapes need no rasterising (CI runs it many times).
DEFAULT_DATA = {"smoke": "shapes", "demo": "emoji", "base": "emoji", "paper": "emoji"}
# Settings one dataset needs on top of a preset (applied after the data is chosen, before --set).
RECIPES: dict[str, dict[str, list[str]]] = {
    "shapes": {
        # a shape's outline is a few percent of the pixels, hence of the loss; the patched U-Net blurs small
        # shapes at low noise, which a full-resolution CNN corrects; the best of 4 decodes, which CLIP ranks
        # well on shapes (none of the three helps on emoji: docs/experiments/decoder.md, sampling.md)
        "demo": ["decoder.outline_weight=8.0", "decoder.decoder.refine_width=32", "decoder.eval.decoder_best_of=4"],
    },
    "emoji": {
        # the second upsampler crops 512 px pictures: a thousand of them vary enough for its few steps
        "demo": ["upsampler2.max_train_images=1000"],
    },
}
# On 2 cores the stages after the CLIP train fastest one after another (the decoder is most of the work),
# so demo keeps 1 lane and trains only the upsamplers beside the CLIP (docs/experiments/pipeline.md);
# smoke takes 2, so that CI runs the side-by-side path through Prefect and MLflow.
LANES = {"smoke": 2}


class CascadeSettings(Config):
    preset: str
    clip: ClipTrainSettings
    prior: PriorTrainSettings
    decoder: DecoderSettings
    upsampler1: UpsamplerTrainSettings
    upsampler2: UpsamplerTrainSettings
    lanes: int = Field(1, ge=1, le=4, description="stages trained at once once the shards exist (decoder, prior and "
                       "both upsamplers), each with its share of the CPU threads: for machines with more cores than "
                       "one small stage can use; on 2 cores it is slower (see LANES)")
    embed_batch_size: int = Field(256, ge=1, description="images and captions the CLIP encodes at once in the embedding "
                                  "step (on the accelerator when there is one)")
    upsamplers_beside_clip: bool = Field(False, description="train both upsamplers, which need no CLIP, in a second "
                                         "lane while the CLIP trains, each lane with half of the CPU threads; the "
                                         "CLIP takes them all once the upsamplers are done")

    @model_validator(mode="after")
    def _one_cascade(self) -> CascadeSettings:
        decoder, up1, up2 = self.decoder.decoder.image_size, self.upsampler1.upsampler, self.upsampler2.upsampler
        if up1.low_res != decoder or up2.low_res != up1.high_res:
            raise ValueError(f"the stages do not chain: decoder {decoder}px, upsampler1 {up1.low_res}->{up1.high_res}px, "
                             f"upsampler2 {up2.low_res}->{up2.high_res}px")
        return self

    @property
    def data_source(self) -> str:
        return self.clip.data.source

    @property
    def embed_image_size(self) -> int:
        """Images stored beside the embeddings, at the decoder's resolution."""
        return self.decoder.decoder.image_size


def data_overrides(spec: str | None) -> list[str]:
    """`--data shapes`, `emoji`, `folder:/path` or `webdataset:/shards/{0000..0099}.tar` as overrides."""
    if spec is None:
        return []
    source, _, path = spec.partition(":")
    if source not in SOURCES:
        raise ConfigError(f"--data {spec!r}: unknown source {source!r}; give one of {', '.join(SOURCES)}, with "
                          "a path for folder and webdataset (e.g. folder:/data/pets)")
    if source in ("folder", "webdataset") and not path:
        raise ConfigError(f"--data {source} needs a path: --data {source}:/path/to/data")
    return [f"data.source={source}"] + ([f"data.path={path}"] if path else [])


def expand_data(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(the `data.*` overrides, each set in every stage that reads images; the others as given)."""
    shared = [f"{stage}.{item}" for item in overrides if item.startswith("data.") for stage in DATA_STAGES]
    return shared, [item for item in overrides if not item.startswith("data.")]


def cascade_settings(preset: str = "demo", overrides: list[str] | tuple[str, ...] = (),
                     data: str | None = None) -> CascadeSettings:
    """Settings of every stage; overrides address a stage, e.g. `prior.train.steps=500`, or every stage
    that reads images, e.g. `data.source=folder`. `data` is the --data form of the same (default: the
    preset's DEFAULT_DATA); the dataset's RECIPES come before the overrides."""
    clip_preset = "base" if preset == "paper" else preset  # the paper used a pretrained CLIP; see README
    if preset not in CASCADE_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(CASCADE_PRESETS)}")
    settings = CascadeSettings(
        preset=preset,
        clip=clip_settings(clip_preset),
        prior=prior_settings(preset),
        decoder=decoder_settings(preset),
        upsampler1=upsampler_settings(1, preset),
        upsampler2=upsampler_settings(2, preset),
        lanes=LANES.get(preset, 1),
        upsamplers_beside_clip=preset in ("smoke", "demo"),
    )
    shared, rest = expand_data([*data_overrides(data or DEFAULT_DATA[preset]), *overrides])
    settings = apply_overrides(settings, shared)
    recipe = RECIPES.get(settings.data_source, {}).get(preset, [])
    return apply_overrides(settings, [*recipe, *rest])
