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

    size: int = Field(200, gt=0, description="held-out images to decode")
    sampler: Sampler = "ddim"
    steps: int = Field(25, gt=0)
    guidance: float = Field(3.0, ge=1.0)
    best_of: int = Field(1, ge=1, description="decodes per embedding; the one CLIP reads closest to it is kept")
    threshold: float | None = Field(None, gt=0)
    invert_size: int = Field(32, gt=0, description="held-out images for the inversion round trip")
    invert_steps: int = Field(50, gt=0)
    grid: int = Field(16, ge=0, description="samples in the logged grid")
    batch_size: int = Field(64, gt=0)
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


# demo, measured on the 2 shared cores (A/B runs on the demo's shards; render_match = CLIP-free pixel check):
# - 32×32 base (upsampler 1 takes it to 128): a 64×64 U-Net of the same widths trains ~3.5x fewer
#   images per second; conv resampling instead of GLIDE's ResNet up/down blocks is ~1.3x faster.
# - v-prediction: with the cosine schedule SNR(T) is ~2e-9, where ε-prediction's x0 estimate divides by
#   sqrt(alpha_bar_T) ~ 5e-5 (grey, noisy flat backgrounds); v stays well-posed. x0-prediction was no
#   better at 300 steps on the unshifted schedule (but see the SNR shift below). No Min-SNR weighting:
#   for v it down-weights the high-noise steps that decide colour, position and size; logit-normal
#   timesteps (SD3) were worse too.
# - coordinate channels + attention: without them objects are still blobs at 400-600 steps.
# - equal wall time (~12 min, 1 thread), render match colour/shape/size/position: batch 32 lr 1e-3
#   300 steps 0.33/0.18/0.61/0.16 (x0 run); lr 3e-3 0.41/0.28/0.67/0.59; batch 16 lr 3e-3 480 steps
#   0.47/0.27/0.65/0.71; 2×2 patches, widths 48/96/192, 700 steps (in 9 min) 0.48/0.25/0.65/0.85.
#   Width 16 without patches or two levels with patches learned slower.
# - Adam β2 0.99 instead of 0.999 (the second moment follows the fast-changing gradients of a short run):
#   the 700-step run above, on 300 held-out images, CLIP zero-shot colour/shape/size/position/background
#   0.30/0.28/0.55/0.51/0.89 -> 0.38/0.33/0.59/0.59/0.90 (pixel check 0.47/0.28/0.68/0.83 ->
#   0.52/0.32/0.73/0.87). Tried with it, none better: lr 2e-3 (zero-shot 0.31/0.32/0.55/0.61/0.87,
#   though the pixel check liked it), lr 5e-3 (unstable), batch 8 (noisy), caption dropout 0.2,
#   attention at 16 as well (40% slower per step).
# - x0 ("sample") prediction on a schedule shifted to SNR / 16 (snr_shift 0.25): flat-colour images are
#   decided at high noise, and v-prediction's x0 = α x_t - σ v keeps the noise the small network fails to
#   reproduce (speckled, over-saturated samples that CLIP misreads). Same 700-step run, 100 held-out
#   images, zero-shot colour/shape/size/position/background (pixel check):
#   v 0.39/0.23/0.57/0.57/0.86 (0.57/0.33/0.77/0.85); v + shift 0.5 0.27/0.21/0.47/0.45/0.84 (0.71/0.37/0.84/0.95),
#   v + shift 0.25 0.27/0.25/0.47/0.29/0.66 (0.79/0.40/0.87/0.98): right objects, noisier images;
#   x0 + shift 0.5 0.80/0.21/0.62/0.98/0.98 (0.93/0.40/0.96/1.00); x0 + shift 0.25 0.78/0.29/0.64/0.95/0.99
#   (0.94/0.55/0.99/1.00). At 1,100 steps x0 + shift 0.25 0.85/0.30/0.63/0.97/1.00 (0.98/0.57/1.00/1.00),
#   shift 0.125 0.86/0.28/0.64/0.96/0.98. The cost: objects come out as soft blobs (shape is still mostly
#   missed) and the DDIM inversion round trip drops from 38 dB to 27 dB. Guidance for this model (1,100
#   steps, 100 images): 1.0 0.60/0.23/0.90/0.99/0.98, 1.5 0.77/0.23/0.89/0.99/0.99, 2.0 0.84/0.25/0.83/0.99/0.99
#   (300 images: 0.84/0.23/0.84/0.98/0.98), 3.0 0.85/0.30/0.63/0.97/1.00, 4.0 0.81/0.30/0.50/0.93/0.97.
# - The draft (draft_width 512) and outline_weight 8. Even from a clean input, the x0 prediction above
#   did not carry the object's shape (pixel check 0.62 at t = 0): the outline is a few percent of the
#   pixels, so it is a few percent of the loss, and convolutions learn slowly where each pixel of a star
#   goes. A plain MLP fitted from the embeddings to the images does (pixel check of the shape, 300 held-out
#   images, batch 16: 0.65 after 1,400 steps; 0.88 with outline weight 8; image + text embedding, batch 128,
#   3,000 steps (~100 s): 0.95, the real images' 0.96). Fitted first, frozen, its draft is given to the U-Net
#   beside the noisy image. 700 steps, guidance 2, zero-shot (pixel check of the shape): without 0.75/0.25/
#   0.82/0.98/0.98 (0.59); outline weight 8 0.84/0.26/0.75/0.98/0.99 (0.66); a learned layout map instead of the
#   draft 0.76/0.28/0.72/0.93/0.99 (0.53); the draft trained along with the U-Net 0.72/0.32/0.72/0.89/1.00
#   (0.60); fitted first 0.93/0.44/0.62/0.92/1.00 (0.86); draft_residual 0.62/0.38/0.51/0.43/0.93 (0.98:
#   right shapes, but the draft's faint halos stay and CLIP misreads them). 1,100 steps,
#   guidance 1.5: 0.95/0.47/0.84/0.99/1.00 (0.92), CLIP consistency 0.83 (0.75 before), inversion 29.0 dB
#   (26.2); guidance 1.0 0.84/0.43/0.93/0.98/1.00, 2.0 0.95/0.42/0.65/0.95/1.00; 6,000 draft fits
#   0.96/0.52/0.76/0.98/1.00 (0.92). CLIP still reads the shape of decoded images far below the pixel
#   check: it was trained on clean renderings only and the decoded ones keep faint halos and soft edges.
#   With the CLIP trained on degraded images (clip/augment.py), 1,100 steps: this preset 0.99/0.73/0.99/1.00/
#   1.00 (0.91) at guidance 1.5; draft_residual 0.98/0.59/0.91/0.97/1.00 (0.99) at 1.5, 1.00/0.75/0.98/1.00/
#   1.00 (0.97) at 1.0: within the noise of 100 images, so the preset keeps the plain draft.
# - Shape, 200 held-out images at guidance 1.5 (pixel check): this preset 0.70 (0.90), small shapes 0.61;
#   outline_weight 16 0.71 (0.93); snr_shift 0.5 0.69 (0.91); v prediction 0.56 (0.94), size 0.77. The U-Net
#   rounds small shapes even from the noised draft at t = 79 (0.70): under-trained, and 4× the steps (on a
#   GPU) read 0.83, so the limit is the CPU budget.
# - Training timesteps. With snr_shift 0.25 only ~15% of uniform timesteps have SNR > 1, and the x0 the U-Net
#   predicts from real images noised to t = 10 (SNR 87) read shape 0.71 (the real images 0.93): it rounds small
#   shapes off even when it is handed them. Half of the samples drawn from the first quarter of the schedule
#   (low_noise_share 0.5): shape on 600 held-out images 0.72 -> 0.78 (on 400 of them 0.73 -> 0.80); a second
#   seed of the old preset read 0.71 where it read 0.70; the first tenth instead of the quarter 0.73 (200 images).
#   Tried and not kept (200 images, shape): an EDM-style skip, x0 = c_skip·x_t/α + c_out·F, with σ_data 0.5 /
#   0.3 / 0.1: 0.26 / 0.56 / 0.66 (the one-step x0 at t = 10 read 0.85 with 0.3, but samples kept speckle
#   noise); no 2×2 patches, with a 24-wide 32×32 level on top (1.8× the time per step): 0.72 at 1,100 steps,
#   0.68 at the equal-time 730; the sampler (DDIM 25 / 50, DDPM 50 / 100, DPM-Solver++ 25, thresholding,
#   η = 1) changed nothing (0.70 everywhere).
# - The refiner (refine_width 32, 4 layers) and a wider draft (draft_width 1024, draft.lr 2e-3). Where the
#   U-Net fails is at low noise: its x0 from real images noised to t = 2 (SNR 451) read shape 0.74, no
#   better than from t = 80, and worse than the noisy input itself (0.92). A plain 5-layer, 48-wide CNN at
#   full resolution learned that denoising 2.4× better (x0 MSE at t = 10, 300 steps) in a quarter of the
#   time. As a zero-initialised correction after the U-Net it took the one-step x0 at t = 2 to 0.83 (MSE
#   0.0052 -> 0.0031), for ~15% more time per step. Draft alone (300 held-out images, shape): 512 wide,
#   lr 1e-3 0.78; 1024, 1e-3 0.82; 1024, 2e-3 0.84; 2048, 2e-3 0.86 (twice the fitting time of 1024);
#   40k training images instead of 20k: no better. Decoded shape, 200 held-out images, DDIM 25, guidance
#   1.0 / 1.25 / 1.5 (pixel check at 1.5): the old preset 0.71 / - / 0.74 (0.89); + refiner 0.71 / - /
#   0.77 (0.965); + refiner + draft 1024: 0.78 / 0.82 / 0.76 (0.96), a second seed 0.76 / 0.73 / 0.66
#   (0.945). Seeds differ by up to 0.1 at guidance 1.5 and agree at 1.0, which is also twice as fast to
#   sample: the preset evaluates at 1.0. Not kept: a 64-wide, 6-layer refiner (45% more time per step);
#   v prediction (speckled samples with every sampler); loss weight min(SNR + 1, γ) with γ 5 / 25 (0.76 /
#   0.71); draft_residual with the 1024 draft (0.84 at guidance 1, but its x0 ignores the noisy input
#   entirely, so inversions and variations would only return the draft); ending the sampler at t = 0
#   (linspace spacing, 25 or 50 steps: 0.75, 0.74).
# - 1,000 U-Net steps and 2,600 draft fits (from 1,100 and 3,000), for the demo's 30 minutes: the
#   decoder's own evaluation (100 images, shape) read 0.77 against 0.78, 1.3 minutes sooner. The draft
#   alone (300 images) reads 0.84 / 0.81 / 0.79 after 3,000 / 2,000 / 1,500 fits. 900 U-Net steps: 0.83
#   in a demo run against 0.80 at 1,000 (0.84 in a second run, whose CLIP embedded without channels-last),
#   0.3-0.4 minutes sooner again.
# - With the 1,000-step CLIP (300 held-out images, shape): this preset 0.87 (guidance 1.25: 0.88); 1,100 U-Net
#   steps and 3,000 draft fits 0.89 (pixel check 0.98, inversion 32.4 dB), for ~2.5 minutes more: within noise.
# - A second demo run's decoder (d10: 300 held-out images, shape 0.853, pixel check 0.967, real images 0.947).
#   Of its 44 misread shapes, 20 are squares and crosses read as circles: rounded corners, not the grain.
#   None of these helped: guidance on the caption alone (the unconditional branch keeps the image
#   embedding) 1.5 / 2 / 3: 0.84 / 0.82 / 0.71 (pixel check up to 0.98); on the image embedding alone 1.5:
#   0.78; the raw weights instead of the EMA: 0.85; the x0 averaged over 4 fresh re-noisings of the decoded
#   images at t = 39 / 100 / 200: 0.85 / 0.85 / 0.86, though the residual against the real images fell from
#   0.119 to 0.104 / 0.097 / 0.095. A training step is conv-bound (convolutions 70% of it, 21 GFLOP/s on one
#   thread); torch.compile of it took 252 s to compile and then 0.85 s a step against 0.84.
# - The third run's decoder (d11: 300 held-out images, shape 0.883, pixel check 0.967, real images 0.98).
#   2,000 U-Net steps and 3,000 draft fits instead of 900 / 2,600 on the same shards (21.9 min alone, 2
#   threads): shape 0.877, inversion 34.2 dB (31.4), CLIP consistency 0.964 (0.959). More steps of this
#   design no longer lift shape. The draft alone reads 0.927, more than the decoded images, and other
#   drafts read the same: 3 layers 0.917, 2048 wide 0.927, caption dropout 0.1 in its fit 0.917.
#   Decoding from the draft noised to t = 500 / 300 / 200 / 120 / 80 / 40 instead of from pure noise:
#   0.883 / 0.887 / 0.893 / 0.900 / 0.893 / 0.897. The U-Net's one-step x0 from real images noised to
#   t = 2 / 10 / 40 / 80 reads 0.930 / 0.927 / 0.923 / 0.910 (0.937 / 0.937 / 0.927 / 0.910 after 2,000
#   steps), while the noisy input at t = 2 reads 0.977: it softens edges, and its x0 error at t = 2
#   (MSE 0.0042; 0.0021 after 2,000 steps) is no smaller than the input's own noise (0.0022). The grain
#   is not what is misread: the decoded images reduced to two colours (k-means) read 0.880. So what is
#   left is the U-Net's denoising at low noise, not the draft, the sampler or the number of steps.
#   Four sampler steps at t = 20 / 10 / 5 / 2 after DDIM's last (t = 39): 0.907 against 0.890 on this
#   decoder, 0.867 against 0.877 on the 2,000-step one; nine (t = 30 ... 1) 0.867. With the x0 also blended
#   towards x_t / α by s² / (s² + σ²/α²) (an EDM-style skip at sampling time), s = 0.05 / 0.1: 0.890 / 0.783.
#   draft_residual with the refiner (900 steps, same shards): 0.893 (pixel check 0.983, CLIP consistency
#   0.967), but inversion 29.8 dB against 31.4: within the noise of 300 images, not kept.
#   A 64-wide, 6-layer refiner with 620 U-Net steps (about the preset's time): 0.853 (pixel check 0.953).
# - ILVR-style anchoring (Choi et al. 2021) of the x0 estimate's low frequencies to the draft's at every
#   step: 2× / 4× / 8× pooled 0.900 / 0.887 / 0.877 against 0.883: within noise, not kept.
# - Best of n decodes (`eval.best_of`, `decoder/best_of.py`): the candidate whose CLIP embedding is closest
#   to the conditioning one. 300 held-out images, shape (a second run's CLIP, trained apart, as judge):
#   d11's decoder best of 1 / 2 / 4 0.88 / 0.92 / 0.94 (0.87 / 0.90 / 0.91), pixel check 0.97 / 0.97 /
#   0.98; d9's 0.87 / 0.91 / 0.95 (0.88 / 0.89 / 0.92, judged by d11's CLIP), pixel check 0.97 / 0.99 /
#   0.99; d12's (weakest CLIP, real shape 0.94) 0.83 / 0.86 / 0.87 (0.87 / 0.88 / 0.89); d13's (real 0.97)
#   0.89 / 0.91 / 0.93 (0.82 / 0.84 / 0.86 by d14's CLIP); d14's 0.84 / 0.89 / 0.91 (0.90 / 0.89 / 0.91
#   by d13's). On d9 and d11 the independent judge sees most of the gain; on d13 and d14 less of it, so
#   part of the gain there is the ranking CLIP agreeing with itself. The demo
#   evaluates best of 4 (4× the decoding time: 100 images take ~1.5 minutes instead of ~0.4).
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
            image_size=32,
            patch_size=2,
            unet=UNetConfig(channels=48, channel_mult=(1, 2, 4), layers_per_block=1, attention_resolutions=(8, 4),
                            head_dim=48, context_dim=128, norm_groups=8, dropout=0.0, resample="conv"),
            noise=NoiseConfig(prediction="sample", snr_shift=0.25),
            coord_channels=True,
            draft_width=1024,
            refine_width=32,
        ),
        draft=DraftTrainConfig(steps=2600, lr=2e-3),
        outline_weight=8.0,
        low_noise_share=0.5,
        # Learning here is limited by optimizer steps, not images: batch 16 at lr 3e-3 and 2×2 patches
        # (0.5 s/step on 2 cores) learn more per minute than batch 32 at lr 1e-3 without patches (1.3 s/step).
        # The decoded images are still far from the captions at this budget (README, "What the demo reaches").
        # auto: bf16 autocast where a step runs faster in it here (docs/experiments/speed.md)
        train=TrainConfig(steps=900, batch_size=16, lr=3e-3, betas=(0.9, 0.99), warmup_steps=50, min_lr_ratio=0.1,
                          ema_decay=0.995, log_every=25, mixed_precision="auto"),
        eval=DecoderEvalConfig(size=100, steps=25, guidance=1.0, best_of=4, invert_size=16),
        min_snr_gamma=None,
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

