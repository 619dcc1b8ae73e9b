"""One preset name for the whole cascade: each stage's own preset of the same name."""

from __future__ import annotations

from pydantic import Field, model_validator

from clip.train import ClipTrainSettings
from clip.train import settings_for as clip_settings
from core.config import Config, apply_overrides
from decoder.config import DecoderSettings
from decoder.config import settings_for as decoder_settings
from prior.train import PriorTrainSettings
from prior.train import settings_for as prior_settings
from upsamplers.config import UpsamplerTrainSettings
from upsamplers.config import settings_for as upsampler_settings

CASCADE_PRESETS = ("smoke", "demo", "base", "paper")
# Measured on the 2 shared cores, demo: decoder, prior and upsamplers one after another with 2 threads
# 16.0 min, side by side with 1 thread each 18.0 min: the decoder is most of that work and ran 1.8x
# slower on one thread beside the upsamplers, so demo keeps 1 lane. smoke takes 2, so that CI runs the
# side-by-side path through Prefect and MLflow. The upsamplers beside the CLIP balance better: CLIP and
# both upsamplers took 11.1 min (upsamplers 5.1 + 3.8 min on one thread, then the CLIP on both) against
# 13.4 min in turn, and the whole demo 27.4 min against 29.6.
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
    def embed_image_size(self) -> int:
        """Images stored beside the embeddings, at the decoder's resolution."""
        return self.decoder.decoder.image_size


def cascade_settings(preset: str = "demo", overrides: list[str] | tuple[str, ...] = ()) -> CascadeSettings:
    """Settings of every stage; overrides address a stage, e.g. `prior.train.steps=500`."""
    clip_preset = "base" if preset == "paper" else preset  # the paper used a pretrained CLIP; see README
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
    return apply_overrides(settings, overrides)
