"""Typed settings of the 64×64 decoder: the network, its noise process, guidance dropout, training
and evaluation, with the size presets `smoke`, `demo`, `base` and `paper`.

The CLIP dimensions (`embed_dim`, `text_width`) are not part of a preset: training fills them in
from the embedding shards' ClipSpec, and the saved decoder_config.json carries them.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from core.config import Config, apply_overrides, pick_preset
from core.diffusion import NoiseConfig, Sampler, SamplingDefaults
from core.precision import Precision
from core.trainer import TrainConfig


class UNetConfig(Config):
    """A GLIDE/Karlo-style diffusers UNet2DConditionModel (ResNet up/down blocks, scale-shift norm,
    attention blocks whose keys and values are the image tokens plus the conditioning tokens)."""

    channels: int = Field(128, gt=0, description="width of the first level")
    channel_mult: tuple[int, ...] = Field((1, 2, 3, 4), min_length=1)
    layers_per_block: int = Field(2, gt=0)
    attention_resolutions: tuple[int, ...] = Field((32, 16, 8), description="feature-map sides with attention")
    head_dim: int = Field(64, gt=0)
    context_dim: int = Field(512, gt=0, description="width of the cross-attention context tokens")
    norm_groups: int = Field(32, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    resample: Literal["resnet", "conv"] = Field(
        "resnet", description="resnet: GLIDE/Karlo ResNet blocks resample between levels; conv: one (transposed-free) "
        "conv per resample, cheaper on CPUs")

    @property
    def block_channels(self) -> tuple[int, ...]:
        return tuple(self.channels * m for m in self.channel_mult)

    @property
    def time_embed_dim(self) -> int:
        """Width of the U-Net's timestep embedding (diffusers: 4 × the first level's width)."""
        return self.block_channels[0] * 4

    @model_validator(mode="after")
    def _check_widths(self) -> Self:
        for width in self.block_channels:
            if width % self.norm_groups:
                raise ValueError(f"block width {width} is not divisible by norm_groups {self.norm_groups}")
        return self


class DecoderConfig(Config):
    """What is needed to rebuild a decoder: stored beside its weights as decoder_config.json."""

    image_size: int = Field(64, ge=8)
    unet: UNetConfig = UNetConfig()
    noise: NoiseConfig = NoiseConfig()
    embed_dim: int | None = Field(None, gt=0, description="CLIP embedding width (from the ClipSpec)")
    text_width: int | None = Field(None, gt=0, description="CLIP caption token width (from the ClipSpec)")
    extra_tokens: int = Field(4, gt=0, description="context tokens projected from the image embedding")
    text_time_embed: bool = Field(True, description="Karlo: also add a projection of the text embedding to the time embedding")
    scale_embeds: bool = Field(True, description="multiply unit-norm CLIP embeddings by sqrt(dim) on input")
    patch_size: int = Field(1, ge=1, description="pixel-unshuffle the input into patch_size² channels and shuffle the "
                            "output back: the U-Net runs at image_size / patch_size (cheaper top level)")
    coord_channels: bool = Field(False, description="append x/y coordinate channels to the U-Net input (CoordConv): "
                                 "positions and sizes in captions are learned much sooner")
    draft_width: int = Field(0, ge=0, description="width of an MLP that drafts the whole image from the image and text "
                             "embeddings; it is fitted before the U-Net (settings.draft) and frozen, and the U-Net sees "
                             "its draft beside the noisy image. A fully connected map learns where each pixel of a "
                             "shape goes far sooner than convolutions do (0: no draft)")
    draft_residual: bool = Field(False, description="x0 prediction only: the U-Net predicts the correction to the draft")
    refine_width: int = Field(0, ge=0, description="width of a small full-resolution CNN after the U-Net that corrects "
                              "its output from the noisy image, the draft and the output itself (zero-initialised, "
                              "so it starts as the plain U-Net). A patched U-Net is a poor low-noise denoiser: it "
                              "blurs the few pixels that make a small shape (0: none)")
    refine_layers: int = Field(4, ge=2, description="convolutions in the refiner")
    image_dropout: float = Field(0.1, ge=0, le=1, description="share of training samples with the learned null image embedding")
    text_dropout: float = Field(0.5, ge=0, le=1, description="share of training samples with the caption dropped")
    learned_variance: bool = Field(False, description="3 more output channels choose each pixel's variance between the "
                                   "posterior's and beta_t's (Improved DDPM, GLIDE, Karlo): trained by the variational "
                                   "bound beside the MSE, used by the unclip sampler (the others take the mean channels)")
    null_text: Literal["zeros", "empty_caption"] = Field(
        "zeros", description="the caption of the unconditional branch and of caption dropout: zeros (no caption "
        "tokens), or CLIP's encoding of the empty caption with its mask, stored with the weights (diffusers' unCLIP "
        "pipeline and Karlo; unclip.convert sets it)")
    context_length: int | None = Field(None, gt=0, description="caption tokens; the empty caption's length")
    sampling: SamplingDefaults = Field(SamplingDefaults(), description="this decoder's own sampling defaults")

    @model_validator(mode="after")
    def _check_resolutions(self) -> Self:
        if self.draft_residual and not (self.draft_width and self.noise.prediction == "sample"):
            raise ValueError("draft_residual needs a draft (draft_width > 0) and x0 prediction (noise.prediction=sample)")
        if self.learned_variance and (self.refine_width or self.draft_residual):
            raise ValueError("learned_variance has no variance for the refiner or the draft residual to correct")
        if self.null_text == "empty_caption" and self.context_length is None:
            raise ValueError("null_text 'empty_caption' needs context_length (the CLIP's caption tokens)")
        levels = len(self.unet.channel_mult)
        if self.image_size % (self.patch_size * 2 ** (levels - 1)):
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size × 2**{levels - 1} "
                             f"({self.patch_size} × {2 ** (levels - 1)}, {levels} levels)")
        sides = {self.unet_size // 2**i for i in range(levels)}
        wrong = [r for r in self.unet.attention_resolutions if r not in sides]
        if wrong:
            raise ValueError(f"attention_resolutions {wrong} are not feature-map sides of this U-Net ({sorted(sides)})")
        # the middle block always attends, at the lowest level's width
        for width, attends in zip(self.unet.block_channels, self.level_has_attention()[:-1] + [True]):
            if attends and width % self.unet.head_dim:
                raise ValueError(f"block width {width} with attention is not divisible by head_dim {self.unet.head_dim}")
        return self

    @property
    def out_channels(self) -> int:
        """Channels per pixel of the network's output: the prediction, then any learned variance."""
        return 6 if self.learned_variance else 3

    @property
    def unet_size(self) -> int:
        """The side of the U-Net's top level."""
        return self.image_size // self.patch_size

    def level_has_attention(self) -> list[bool]:
        return [self.unet_size // 2**i in self.unet.attention_resolutions for i in range(len(self.unet.channel_mult))]

    def for_clip(self, embed_dim: int, text_width: int) -> DecoderConfig:
        return self.override(embed_dim=embed_dim, text_width=text_width)


class DecoderEvalConfig(Config):
    """How the end-of-training evaluation decodes held-out embeddings."""

    size: int = Field(200, gt=0, description="held-out examples to decode")
    sampler: Sampler = "ddim"
    steps: int = Field(25, gt=0)
    guidance: float = Field(3.0, ge=1.0)
    decoder_best_of: int = Field(1, ge=1, description="decodes per embedding; the one CLIP reads closest to it is kept")
    threshold: float | None = Field(None, gt=0)
    invert_size: int = Field(32, gt=0, description="held-out examples for the inversion round trip")
    invert_steps: int = Field(50, gt=0)
    grid: int = Field(16, ge=0, description="samples in the logged grid")
    batch_size: int = Field(64, gt=0)
    precision: Precision = Field("fp32", description="of the decodes (the inversion round trip stays fp32): auto "
                                 "takes bf16 where it is faster here")
    seed: int = 0


class DraftTrainConfig(Config):
    """How the draft MLP is fitted (Adam, cosine decay) before the U-Net trains."""

    steps: int = Field(3000, ge=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)


class DecoderSettings(Config):
    """Everything `train_decoder` needs besides the shard folders."""

    decoder: DecoderConfig
    train: TrainConfig
    eval: DecoderEvalConfig = DecoderEvalConfig()
    min_snr_gamma: float | None = Field(5.0, gt=0, description="Min-SNR-γ loss weighting (Hang et al. 2023); None: plain MSE")
    outline_weight: float = Field(0.0, ge=0, description="extra loss weight on the clean image's edges (pixels next to "
                                  "a colour change): 1 + outline_weight at the strongest edge; 0: plain per-pixel MSE")
    low_noise_share: float = Field(0.0, ge=0, lt=1, description="share of training samples whose timestep is drawn "
                                   "from the low-noise end of the schedule (its first low_noise_end) instead of the "
                                   "whole of it: on a schedule shifted towards noise (snr_shift < 1) few samples "
                                   "train where the edges of small objects are decided")
    low_noise_end: float = Field(0.25, gt=0, le=1, description="the low-noise end that low_noise_share draws from, "
                                 "as a share of the schedule's steps")
    draft: DraftTrainConfig = DraftTrainConfig()
    buffer_rows: int = Field(16384, gt=0, description="training examples shuffled together: the memory the data takes")
    channels_last: bool = Field(True, description="channels-last memory format (faster convolutions on CPUs)")


# The demo decoder's settings carry their reasons in a line each; the runs behind them, and what was
# tried instead, are in docs/experiments/decoder.md.
PRESETS: dict[str, DecoderSettings] = {
    "smoke": DecoderSettings(
        decoder=DecoderConfig(
            image_size=16,
            unet=UNetConfig(channels=16, channel_mult=(1, 2), layers_per_block=1, attention_resolutions=(8,),
                            head_dim=16, context_dim=32, norm_groups=8, dropout=0.0),
            noise=NoiseConfig(prediction="sample", snr_shift=0.25, train_steps=100),
            draft_width=32,
            refine_width=8,  # the demo's parts, so the smoke run exercises them end to end
        ),
        draft=DraftTrainConfig(steps=20, batch_size=8),
        train=TrainConfig(steps=10, batch_size=8, lr=1e-3, warmup_steps=2, ema_decay=0.9, log_every=5),
        eval=DecoderEvalConfig(size=8, steps=5, invert_size=4, invert_steps=5, grid=4, batch_size=8),
        channels_last=False,
    ),
    "demo": DecoderSettings(
        decoder=DecoderConfig(
            image_size=32,  # upsampler 1 takes it to 128; a 64 px U-Net trains ~3.5x fewer images a second
            patch_size=2,  # more optimizer steps per minute, which is what limits learning at this budget
            unet=UNetConfig(channels=48, channel_mult=(1, 2, 4), layers_per_block=1, attention_resolutions=(8, 4),
                            head_dim=48, context_dim=128, norm_groups=8, dropout=0.0,
                            resample="conv"),  # cheaper on CPUs than GLIDE's ResNet up/down blocks
            # x0 prediction on a schedule shifted to SNR/16: flat-colour images are decided at high noise,
            # and v prediction's x0 keeps a speckle the small network cannot reproduce
            noise=NoiseConfig(prediction="sample", snr_shift=0.25),
            coord_channels=True,  # without them objects stay blobs in a short run
            draft_width=1024,  # an MLP learns where a shape's pixels go far sooner than convolutions do
        ),
        draft=DraftTrainConfig(steps=2600, lr=2e-3),
        # no outline weight or refiner: on real artwork the first adds speckle and the second does nothing;
        # the shapes benchmark keeps both (flows/presets.py RECIPES)
        low_noise_share=0.5,  # the shifted schedule trains few samples where small shapes' edges are decided
        # auto: bf16 autocast where a step runs faster in it here (docs/experiments/speed.md).
        # Small batches at a high lr: learning is limited by optimizer steps, not images; β2 0.99 follows
        # the fast-changing gradients of a short run.
        train=TrainConfig(steps=900, batch_size=16, lr=3e-3, betas=(0.9, 0.99), warmup_steps=50, min_lr_ratio=0.1,
                          ema_decay=0.995, log_every=25, mixed_precision="auto"),
        # unguided, one decode: guidance 1.5-2 and the best of 4 read no better on emoji (shapes keeps the
        # best of 4: flows/presets.py RECIPES); generation takes these as the model's defaults
        eval=DecoderEvalConfig(size=100, steps=25, guidance=1.0, decoder_best_of=1, invert_size=16, precision="auto"),
        min_snr_gamma=None,  # it down-weights the high-noise steps that decide colour, position and size
        channels_last=False,
    ),
    "base": DecoderSettings(
        decoder=DecoderConfig(
            image_size=64,
            unet=UNetConfig(channels=128, channel_mult=(1, 2, 3, 4), layers_per_block=2,
                            attention_resolutions=(16, 8), head_dim=64, context_dim=512, dropout=0.1),
            noise=NoiseConfig(prediction="v_prediction"),
        ),
        train=TrainConfig(steps=100_000, batch_size=64, lr=1e-4, warmup_steps=1000, mixed_precision="bf16",
                          ema_decay=0.9999, checkpoint_every=5000, eval_every=5000),
        eval=DecoderEvalConfig(size=1000, steps=50, guidance=3.0),
    ),
    "paper": DecoderSettings(
        decoder=DecoderConfig(
            image_size=64,
            unet=UNetConfig(channels=512, channel_mult=(1, 2, 3, 4), layers_per_block=3,
                            attention_resolutions=(32, 16, 8), head_dim=64, context_dim=1536, dropout=0.1),
            noise=NoiseConfig(prediction="epsilon"),
        ),
        train=TrainConfig(steps=800_000, batch_size=64, lr=1.2e-4, warmup_steps=10_000, mixed_precision="bf16",
                          ema_decay=0.9999, checkpoint_every=10_000, eval_every=10_000),
        eval=DecoderEvalConfig(size=1000, sampler="ddpm", steps=250, guidance=1.25),
    ),
}


def settings_for(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> DecoderSettings:
    return apply_overrides(pick_preset(PRESETS, preset, "decoder"), overrides)

