"""The super-resolution network: a diffusers UNet2DModel fed [noisy image, upsampled low-res].

The network knows nothing of schedules or augmentations; it maps (x_t, t, condition, level) to the
prediction its NoiseConfig asks for. No attention anywhere, so it runs on any image whose sides are
multiples of `size_multiple`: trained on crops, used on whole images or tiles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from core.resnet import use_lean_resnets
from upsamplers.config import Resize, UpsamplerConfig

# The augmentation level in [0, 1] goes through the U-Net's timestep embedding at this scale.
LEVEL_SCALE = 1000.0


class PixelNorm(torch.nn.GroupNorm):
    """GroupNorm's parameters with statistics over the channels of each pixel (one group).

    Unlike GroupNorm, the output at a pixel does not depend on the rest of the image, so a crop,
    a tile and the whole image give the same activations where their receptive fields agree.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.affine and x.is_contiguous(memory_format=torch.channels_last):  # one kernel, gain and bias in it
            return _pixel_layer_norm(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)
        out = self.normalise(x)
        if self.affine:
            out = torch.addcmul(self.bias.to(out.dtype).view(1, -1, 1, 1), out, self.weight.to(out.dtype).view(1, -1, 1, 1))
        return out

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The statistics part alone (no gain or bias), in x's dtype."""
        if x.is_contiguous(memory_format=torch.channels_last):
            return _pixel_layer_norm(x, None, None, self.eps)
        # plain sums over dim 1: on CPU several times faster than layer_norm on a permuted strided view
        h = x.float()  # statistics in fp32 also for bf16 input
        mean = h.sum(dim=1, keepdim=True) / self.num_channels
        centred = h - mean
        var = (centred * centred).sum(dim=1, keepdim=True) / self.num_channels
        return (centred * torch.rsqrt(var + self.eps)).to(x.dtype)


def _pixel_layer_norm(x: torch.Tensor, weight, bias, eps: float) -> torch.Tensor:
    """Channels-last: each pixel's channels lie side by side, one layer-norm row per pixel (fp32 statistics
    inside the kernel, whatever x's dtype)."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps).permute(0, 3, 1, 2)


def _use_pixel_norm(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is torch.nn.GroupNorm:
            norm = PixelNorm(child.num_groups, child.num_channels, child.eps, child.affine)
            if child.affine:
                norm.load_state_dict(child.state_dict())
            setattr(module, name, norm)
        else:
            _use_pixel_norm(child)


def _to_weight_dtype(module: torch.nn.Module, args: tuple) -> tuple:
    dtype = module.linear_1.weight.dtype
    return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def build_unet(cfg: UpsamplerConfig) -> UNet2DModel:
    m = cfg.model
    n = len(m.channels)
    down, up = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if m.resample == "resnet" else (
        "DownBlock2D", "UpBlock2D")
    unet = UNet2DModel(
        sample_size=cfg.high_res,
        in_channels=6,
        out_channels=m.out_channels,
        down_block_types=(down,) * n,
        up_block_types=(up,) * n,
        block_out_channels=tuple(m.channels),
        layers_per_block=m.layers_per_block,
        mid_block_type="UNetMidBlock2D",
        add_attention=False,
        norm_num_groups=m.norm_groups if m.norm == "group" else 1,
        dropout=m.dropout,
        resnet_time_scale_shift="scale_shift" if m.time_scale_shift else "default",
        class_embed_type="timestep" if m.level_conditioning else None,
    )
    if m.norm == "pixel":
        _use_pixel_norm(unet)
    use_lean_resnets(unet)
    if unet.class_embedding is not None:
        # diffusers hands the level's sinusoidal embedding over in fp32 whatever the weights' dtype
        unet.class_embedding.register_forward_pre_hook(_to_weight_dtype)
    # zero output layer, as in ADM/GLIDE: training starts from a constant (or, residual, bicubic) output
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    return unet


class Upsampler(torch.nn.Module):
    def __init__(self, cfg: UpsamplerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.unet = build_unet(cfg)
        self.final_unet = build_unet(cfg) if cfg.model.final_step_unet else None

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor, level: torch.Tensor,
                final: bool = False) -> torch.Tensor:
        """x_t, condition: [B, 3, H, W] (condition = bicubic-upsampled, augmented low-res); t, level: [B].
        `final`: the last sampling step, which the final-step U-Net takes where there is one."""
        labels = level.float() * LEVEL_SCALE if self.cfg.model.level_conditioning else None
        unet = self.final_unet if final and self.final_unet is not None else self.unet
        out = unet(torch.cat([x_t, condition.to(x_t.dtype)], dim=1), t, class_labels=labels).sample
        return out + condition if self.cfg.model.residual else out


def upsample_bicubic(low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The conditioning image: plain bicubic upsampling, clamped to the pixel range."""
    return F.interpolate(low_res, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


def upsample_condition(low_res: torch.Tensor, size: tuple[int, int], resize: Resize = "bicubic") -> torch.Tensor:
    """The conditioning image, upsampled the way the stage's config says (UpsamplerConfig.condition_resize)."""
    if resize == "bicubic_antialias":
        return F.interpolate(low_res, size=size, mode="bicubic", align_corners=False, antialias=True)
    return upsample_bicubic(low_res, size)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
