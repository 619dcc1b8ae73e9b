"""Typed settings of the two super-resolution stages and their presets.

`UpsamplerConfig` is what a trained upsampler needs to be rebuilt and sampled (stored as
`upsampler_config.json` beside the weights); `UpsamplerTrainSettings` adds the training loop and
the data. Stage 1 is 64→256 (cosine schedule, Gaussian-blur augmentation), stage 2 256→1024
(linear schedule, BSR degradation); the CPU presets keep the design and shrink sizes and widths.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.config import Config, apply_overrides, pick_preset
from core.diffusion import NoiseConfig, Sampler
from core.errors import ConfigError
from core.trainer import TrainConfig
from data import DatasetConfig
from data.config import BUILT_IN

Stage = Literal[1, 2]
Interpolation = Literal["bilinear", "bicubic", "area"]
Resize = Literal["bicubic", "bicubic_antialias"]


class UpsamplerModelConfig(Config):
    """A diffusers UNet2DModel without attention: convolutions only, so any image size works."""

    channels: tuple[int, ...] = Field((128, 256, 384, 512), min_length=2, description="width per resolution")
    layers_per_block: int = Field(2, ge=1)
    # pixel: GroupNorm's weights, statistics over the channels of each pixel (as EDM2's pixel norm),
    # so the network is local: crops in training, full images and tiles at inference all see the same
    # statistics. group: diffusers' stock GroupNorm, whose statistics depend on the image extent.
    norm: Literal["pixel", "group"] = "pixel"
    norm_groups: int = Field(32, ge=1, description="groups of the 'group' norm")
    dropout: float = Field(0.0, ge=0, lt=1)
    # Cascaded-diffusion style: the augmentation level is embedded like a timestep and added to it.
    level_conditioning: bool = True
    # With x0 ("sample") prediction: the network predicts the correction to the upsampled input, so the
    # untrained network (zero output layer) returns the bicubic image and training only learns detail.
    # On the CPU budgets, ε- and v-prediction were still noise after 200 steps; this was not (bench/).
    residual: bool = True
    resample: Literal["conv", "resnet"] = Field("conv", description="between levels: one convolution (diffusers' "
                                                "DownBlock2D/UpBlock2D), or ResNet blocks (GLIDE's, Karlo's)")
    time_scale_shift: bool = Field(True, description="the timestep embedding scales and shifts each normalised feature "
                                   "map (FiLM, as GLIDE/ADM); False: it is added to them (Karlo's super-resolution U-Nets)")
    learned_variance: bool = Field(False, description="3 more output channels choose each pixel's variance (core.vlb); "
                                   "used by the unclip sampler, trained by the variational bound beside the MSE")
    final_step_unet: bool = Field(False, description="a second U-Net of the same layout takes the last sampling step "
                                  "(Karlo's, fine-tuned with a GAN loss this project does not have: training keeps it "
                                  "frozen, so it comes with converted weights)")

    @model_validator(mode="after")
    def _check(self) -> UpsamplerModelConfig:
        if self.norm == "group" and any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"every width in channels {self.channels} must divide by norm_groups {self.norm_groups}")
        if self.learned_variance and self.residual:
            raise ValueError("learned_variance with residual: the correction to bicubic has no variance to learn")
        return self

    @property
    def out_channels(self) -> int:
        return 6 if self.learned_variance else 3

    @property
    def size_multiple(self) -> int:
        """Image sides (and tile origins) must be multiples of this: the U-Net halves len(channels)-1 times."""
        return 2 ** (len(self.channels) - 1)


class AugmentConfig(Config):
    """Noise-conditioning augmentation of the low-res input; `level` in [0, 1] scales every strength.
    Training applies all of it; inference only the Gaussian noise (see upsamplers.sample).

    blur (stage 1): Gaussian blur of `blur_kernel`/`blur_sigma`, then Gaussian noise of std
    level * noise_max. bsr (stage 2): in a random order, iso/anisotropic blur (σ up to
    level * blur_sigma_max low-res pixels), resizing to the low-res size with a random kernel,
    Gaussian noise (std up to level * noise_max), JPEG (quality down to 95 - level * (95 - jpeg_min)).
    """

    kind: Literal["blur", "bsr"] = "blur"
    blur_kernel: int = Field(3, ge=1)
    blur_sigma: float = Field(0.6, gt=0)
    blur_sigma_max: float = Field(1.5, gt=0)
    noise_max: float = Field(0.2, ge=0, le=1, description="std on the [-1, 1] pixel scale at level 1")
    jpeg_min_quality: int = Field(30, ge=1, le=95)
    kernels: tuple[Interpolation, ...] = Field(("bilinear", "bicubic", "area"), min_length=1)
    train_level_max: float = Field(1.0, ge=0, le=1, description="training levels are uniform in [0, this]")

    @model_validator(mode="after")
    def _check(self) -> AugmentConfig:
        if self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be odd, got {self.blur_kernel}")
        return self


class UpsamplerConfig(Config):
    """One super-resolution stage: everything needed to rebuild and sample it."""

    stage: Stage = 1
    low_res: int = Field(64, ge=4)
    high_res: int = Field(256, ge=8)
    model: UpsamplerModelConfig = UpsamplerModelConfig()
    noise: NoiseConfig = NoiseConfig(schedule="cosine", prediction="sample")
    augment: AugmentConfig = AugmentConfig()
    sampler: Sampler = "ddim"
    sample_steps: int = Field(27, ge=1)
    aug_level: float = Field(0.05, ge=0, le=1, description="noise augmentation level at inference (mild)")
    tile: int | None = Field(None, ge=8, description="default tile side for inference; None: whole image")
    tile_overlap: int = Field(32, ge=0)
    condition_resize: Resize = Field("bicubic", description="how the low-res input is upsampled: torch's bicubic "
                                     "(a = -0.75) clamped to the pixel range, or its antialiased kernel (a = -0.5, "
                                     "PIL's) unclamped, which diffusers' unCLIP pipeline gives Karlo's models")

    @model_validator(mode="after")
    def _check(self) -> UpsamplerConfig:
        m = self.model.size_multiple
        if self.high_res % self.low_res or self.high_res // self.low_res < 2:
            raise ValueError(f"high_res {self.high_res} must be an integer multiple (>= 2) of low_res {self.low_res}")
        if self.high_res % m:
            raise ValueError(f"high_res {self.high_res} must be a multiple of {m} for a U-Net with "
                             f"{len(self.model.channels)} resolutions")
        if self.model.residual and self.noise.prediction != "sample":
            raise ValueError("model.residual needs noise.prediction 'sample' (the network then predicts x0 - condition)")
        if self.sample_steps > self.noise.train_steps:
            raise ValueError(f"sample_steps {self.sample_steps} exceeds noise.train_steps {self.noise.train_steps}")
        if self.tile is not None:
            check_tiling(self.tile, self.tile_overlap, m)
        return self

    @property
    def factor(self) -> int:
        return self.high_res // self.low_res


def check_tiling(tile: int, overlap: int, multiple: int) -> None:
    if tile % multiple or overlap % multiple:
        raise ValueError(f"tile {tile} and overlap {overlap} must be multiples of {multiple}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile {tile}")


class UpsamplerTrainSettings(Config):
    upsampler: UpsamplerConfig
    train: TrainConfig
    data: DatasetConfig
    crop: int | None = Field(None, ge=8, description="training crop side at high res; None: high_res // 4")
    crop_tries: int = Field(1, ge=1, description="random crop windows drawn per image, keeping the most detailed "
                            "(largest pixel std); 1: plain random crops")
    max_train_images: int | None = Field(None, ge=1, description="images of the training split decoded for cropping "
                                         "(None: all of them; they are streamed, not held in memory)")
    buffer_rows: int = Field(1024, gt=0, description="training images shuffled together: the memory the data takes")
    eval_size: int = Field(8, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="sampling steps in evaluation; None: sample_steps")
    channels_last: bool = Field(True, description="channels-last memory format in training: oneDNN's convolutions and "
                                "the pixel norm's one-kernel form run faster in it on CPUs (docs/experiments/speed.md)")

    @model_validator(mode="after")
    def _check(self) -> UpsamplerTrainSettings:
        up, crop = self.upsampler, self.crop_size
        if crop % up.factor or crop % up.model.size_multiple or crop > up.high_res:
            raise ValueError(f"crop {crop} must be at most high_res {up.high_res} and a multiple of the factor "
                             f"{up.factor} and of {up.model.size_multiple}")
        return self

    @property
    def crop_size(self) -> int:
        return self.crop if self.crop is not None else self.upsampler.high_res // 4


def _stage(stage: int, low: int, high: int, channels: tuple[int, ...], steps: int, **kw) -> UpsamplerConfig:
    schedule = "cosine" if stage == 1 else "linear"
    augment = AugmentConfig(kind="blur") if stage == 1 else AugmentConfig(kind="bsr", noise_max=0.1)
    return UpsamplerConfig(stage=stage, low_res=low, high_res=high, model=UpsamplerModelConfig(channels=channels, **kw),
                           noise=NoiseConfig(schedule=schedule, prediction="sample"), augment=augment,
                           sample_steps=steps)


def _cpu_train(steps: int, batch: int, lr: float = 2e-3, mixed_precision: str = "no") -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=min(50, steps // 10), min_lr_ratio=0.1,
                       ema_decay=0.995, log_every=max(1, min(25, steps // 4)), mixed_precision=mixed_precision)


def _gpu_train(steps: int, batch: int, lr: float) -> TrainConfig:
    """`batch` is per process: the paper's global batch over 8 processes."""
    return TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=2000, mixed_precision="bf16",
                       ema_decay=0.9999, checkpoint_every=5000, eval_every=5000)


PRESETS: dict[int, dict[str, UpsamplerTrainSettings]] = {
    1: {
        "smoke": UpsamplerTrainSettings(
            upsampler=_stage(1, 16, 64, (16, 32), 4, layers_per_block=1),
            train=_cpu_train(4, 4), data=DatasetConfig(num_examples=40, val_size=8, image_size=64),
            crop=16, eval_size=2),
        # 1 DDIM step: more add sharpness but also the small model's noise texture in flat regions, and only
        # 1 stays within 1 dB of bicubic (docs/experiments/upsamplers.md; `--steps upsampler1=2` is sharper).
        "demo": UpsamplerTrainSettings(
            upsampler=_stage(1, 32, 128, (32, 64, 96), 1, layers_per_block=1),
            # auto: bf16 autocast where a step runs faster in it here (docs/experiments/speed.md)
            train=_cpu_train(250, 16, mixed_precision="auto"),
            data=DatasetConfig(num_examples=1000, val_size=16, image_size=128),
            eval_size=8),
        "base": UpsamplerTrainSettings(
            upsampler=_stage(1, 64, 256, (64, 128, 256, 256), 27),
            train=_gpu_train(200_000, 64, 1e-4), data=DatasetConfig(num_examples=200_000, image_size=256)),
        "paper": UpsamplerTrainSettings(  # ~700M parameters
            upsampler=_stage(1, 64, 256, (320, 640, 960, 1280), 27, layers_per_block=3),
            train=_gpu_train(1_000_000, 1024 // 8, 1.2e-4), data=DatasetConfig(num_examples=200_000, image_size=256)),
    },
    2: {
        "smoke": UpsamplerTrainSettings(
            upsampler=_stage(2, 64, 128, (16, 32), 3, layers_per_block=1),
            train=_cpu_train(4, 2), data=DatasetConfig(num_examples=20, val_size=4, image_size=128),
            crop=32, eval_size=1),
        # Small crops, each the most detailed of 8 windows: edges are ~0.3% of a 512 px image, and on plain
        # random crops the model stayed bicubic (docs/experiments/upsamplers.md).
        "demo": UpsamplerTrainSettings(
            upsampler=_stage(2, 128, 512, (16, 32, 64), 4, layers_per_block=1),
            train=_cpu_train(300, 32, mixed_precision="auto"),
            data=DatasetConfig(num_examples=400, val_size=8, image_size=512),
            crop=32, crop_tries=8, eval_size=4),
        "base": UpsamplerTrainSettings(
            upsampler=_stage(2, 256, 1024, (32, 64, 128, 256), 15).override(tile=512, tile_overlap=64),
            train=_gpu_train(200_000, 32, 1e-4), data=DatasetConfig(num_examples=200_000, image_size=1024)),
        "paper": UpsamplerTrainSettings(  # ~300M parameters
            upsampler=_stage(2, 256, 1024, (224, 448, 672, 896), 15, layers_per_block=3).override(
                tile=512, tile_overlap=64),
            train=_gpu_train(1_000_000, 512 // 8, 1.2e-4), data=DatasetConfig(num_examples=200_000, image_size=1024)),
    },
}


def settings_for(stage: int, preset: str, overrides: list[str] | tuple[str, ...] = ()) -> UpsamplerTrainSettings:
    """A preset of one stage with `key=value` overrides applied (ConfigError on a bad name or value)."""
    if stage not in PRESETS:
        raise ConfigError(f"unknown upsampler stage {stage!r}; choose 1 (64→256) or 2 (256→1024)")
    return with_data_size(apply_overrides(pick_preset(PRESETS[stage], preset, f"stage-{stage} upsampler"), overrides))


def with_data_size(settings: UpsamplerTrainSettings) -> UpsamplerTrainSettings:
    """A built-in dataset rendered at least at the stage's high resolution (a fine-tuned parent's may exceed
    the preset's)."""
    if settings.data.source in BUILT_IN and settings.data.image_size < settings.upsampler.high_res:
        settings = settings.override(data={**settings.data.model_dump(), "image_size": settings.upsampler.high_res})
    return settings
