"""The CLIP stage's settings: the small CLIP's model config (open_clip's own classes, sized by presets)
and its training presets, together."""

from __future__ import annotations

from typing import Any, Literal

import open_clip
from pydantic import Field, model_validator

from clip.augment import ClipAugmentConfig
from core.config import Config, apply_overrides, pick_preset
from core.trainer import TrainConfig
from data import DatasetConfig


class ClipModelConfig(Config):
    """An open_clip CLIP with a ViT or a ResNet image tower; `open_clip_config()` is the JSON open_clip reads."""

    embed_dim: int = Field(128, gt=0)
    image_size: int = Field(64, ge=16)
    patch_size: int = Field(8, gt=0)
    vision_width: int = Field(128, gt=0)
    vision_layers: int = Field(4, gt=0)
    vision_heads: int = Field(4, gt=0)
    # set: the image tower is open_clip's ModifiedResNet (CLIP RN50's design: conv stem, bottleneck stages
    # with these depths, width `vision_width`, attention pooling with `vision_heads` heads) instead of a ViT
    resnet_layers: tuple[int, int, int, int] | None = None
    # fixed 2-D sin-cos position embeddings tell the image tower where things are from step one;
    # learned ones start near zero, and small CLIPs then learned position last (chance after 25k pairs)
    pos_embed: Literal["learnable", "sin_cos_2d"] = "sin_cos_2d"
    context_length: int = Field(24, ge=8)
    text_width: int = Field(128, gt=0)
    text_layers: int = Field(4, gt=0)
    text_heads: int = Field(4, gt=0)
    vocab_size: int = Field(49408, gt=0)

    @model_validator(mode="after")
    def _divisible(self) -> ClipModelConfig:
        if self.resnet_layers is not None:
            if self.image_size % 32:
                raise ValueError(f"a ResNet image tower needs image_size a multiple of 32, got {self.image_size}")
            if (self.vision_width * 32) % self.vision_heads:
                raise ValueError(f"ResNet output width {self.vision_width * 32} is not divisible by vision_heads {self.vision_heads}")
        elif self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        towers = [(self.text_width, self.text_heads, "text")]
        if self.resnet_layers is None:
            towers.append((self.vision_width, self.vision_heads, "vision"))
        for width, heads, what in towers:
            if width % heads:
                raise ValueError(f"{what}_width {width} is not divisible by {what}_heads {heads}")
        return self

    def open_clip_config(self) -> dict[str, Any]:
        if self.resnet_layers is not None:
            vision = {"image_size": self.image_size, "layers": list(self.resnet_layers), "width": self.vision_width,
                      "head_width": self.vision_width * 32 // self.vision_heads}
        else:
            vision = {"image_size": self.image_size, "patch_size": self.patch_size, "width": self.vision_width,
                      "layers": self.vision_layers, "head_width": self.vision_width // self.vision_heads,
                      "pos_embed_type": self.pos_embed}
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": vision,
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": self.vocab_size,
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }

    def build(self) -> open_clip.CLIP:
        cfg = self.open_clip_config()
        return open_clip.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], output_dict=True)


MODEL_PRESETS: dict[str, ClipModelConfig] = {
    "smoke": ClipModelConfig(embed_dim=32, image_size=32, patch_size=8, vision_width=32, vision_layers=1,
                             vision_heads=2, text_width=32, text_layers=1, text_heads=2),
    # A ResNet image tower: it learnt position and shape far sooner than a ViT, at less time a step; 16
    # tokens hold the longest canonical shapes caption (13) (docs/experiments/clip.md).
    "demo": ClipModelConfig(resnet_layers=(1, 1, 1, 1), vision_width=16, vision_heads=16, context_length=16,
                            text_layers=3),
    "base": ClipModelConfig(embed_dim=256, image_size=64, patch_size=8, vision_width=256, vision_layers=8,
                            vision_heads=8, context_length=32, text_width=256, text_layers=8, text_heads=8),
    "large": ClipModelConfig(embed_dim=512, image_size=224, patch_size=16, vision_width=768, vision_layers=12,
                             vision_heads=12, context_length=77, text_width=512, text_layers=12, text_heads=8),
}


def model_preset(name: str) -> ClipModelConfig:
    return pick_preset(MODEL_PRESETS, name, "CLIP model")


class ClipTrainSettings(Config):
    model: ClipModelConfig
    train: TrainConfig
    data: DatasetConfig
    eval_size: int = Field(1000, gt=1, description="held-out pairs the retrieval is scored on")
    buffer_rows: int = Field(32768, gt=0, description="training rows shuffled together (and searched for hard "
                             "negatives): the memory the data takes, whatever the dataset's size")
    hard_fraction: float = Field(0.0, ge=0, lt=1, description="share of each batch given to caption-neighbour hard negatives")
    augment: ClipAugmentConfig = ClipAugmentConfig()
    channels_last: bool = Field(True, description="channels-last memory format for the image tower (faster "
                                "convolutions on CPUs)")


PRESETS: dict[str, ClipTrainSettings] = {
    "smoke": ClipTrainSettings(
        model=model_preset("smoke"),
        train=TrainConfig(steps=20, batch_size=32, lr=1e-3, warmup_steps=2, log_every=5),
        data=DatasetConfig(num_examples=600, val_size=100, image_size=32),
        eval_size=100,
        augment=ClipAugmentConfig(probability=0.5),
    ),
    "demo": ClipTrainSettings(  # the runs behind each choice: docs/experiments/clip.md
        model=model_preset("demo"),
        # 1,000 steps: shape, the attribute learnt last, is still being learnt at 800
        train=TrainConfig(steps=1000, batch_size=128, lr=1e-3, weight_decay=0.1, warmup_steps=50,
                          min_lr_ratio=0.05, ema_decay=0.98, log_every=25),
        data=DatasetConfig(num_examples=21000, val_size=1000, image_size=64,
                           paraphrase=False),  # paraphrases slowed learning
        hard_fraction=0.5,  # caption-neighbour negatives: they teach shape
        # half the images degraded as decoded ones are, so that it reads those as it reads real ones
        augment=ClipAugmentConfig(probability=0.5, min_scale=0.35, max_blur=1.5, max_noise=0.06, max_ringing=1.5,
                                  max_blotch=0.06),
    ),
    "base": ClipTrainSettings(
        model=model_preset("base"),
        train=TrainConfig(steps=20000, batch_size=512, lr=5e-4, weight_decay=0.2, warmup_steps=1000,
                          mixed_precision="bf16", ema_decay=0.999, checkpoint_every=2000, eval_every=2000),
        data=DatasetConfig(num_examples=200000, val_size=1000, image_size=64, paraphrase=True),
    ),
}


def settings_for(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> ClipTrainSettings:
    return apply_overrides(pick_preset(PRESETS, preset, "CLIP training"), overrides)
