"""Two diffusion upsamplers (64→256, 256→1024) with noise-conditioning augmentation.

Training lives in `upsamplers.train` (`train_upsampler`, `python -m upsamplers.train`)."""

from upsamplers.config import (
    PRESETS,
    AugmentConfig,
    UpsamplerConfig,
    UpsamplerModelConfig,
    UpsamplerTrainSettings,
    settings_for,
)
from upsamplers.degrade import degrade
from upsamplers.evaluate import evaluate_upsampler, psnr, sharpness, side_by_side, ssim
from upsamplers.io import load_upsampler, save_upsampler
from upsamplers.model import Upsampler
from upsamplers.sample import upsample

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "Upsampler",
    "UpsamplerConfig",
    "UpsamplerModelConfig",
    "UpsamplerTrainSettings",
    "degrade",
    "evaluate_upsampler",
    "load_upsampler",
    "psnr",
    "save_upsampler",
    "settings_for",
    "sharpness",
    "side_by_side",
    "ssim",
    "upsample",
]
