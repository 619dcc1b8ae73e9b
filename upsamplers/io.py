"""An upsampler on disk: `model.safetensors` + `upsampler_config.json` (+ optional extra configs)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from core.config import Config
from core.model_folder import ModelKind, load_model_folder, save_model
from upsamplers.config import UpsamplerConfig
from upsamplers.model import Upsampler

UPSAMPLER = ModelKind("upsampler", UpsamplerConfig, Upsampler)


def save_upsampler(folder: str | Path, model: Upsampler, extra: Mapping[str, Config | Mapping[str, Any]] | None = None) -> Path:
    """Write the weights and the config that rebuilds them (plus e.g. the training settings)."""
    return save_model(folder, model, UPSAMPLER, model.cfg, extra)


def load_upsampler(folder: str | Path, device: torch.device | str = "cpu") -> Upsampler:
    """Rebuild the model from its folder, in eval mode; any problem is one CheckpointError."""
    return load_model_folder(folder, UPSAMPLER, device)


def as_model(model_or_folder: Upsampler | str | Path, device: torch.device | str | None = None) -> Upsampler:
    """Accept a loaded upsampler or its folder."""
    if isinstance(model_or_folder, Upsampler):
        return model_or_folder if device is None else model_or_folder.to(device)
    if isinstance(model_or_folder, str | Path):
        return load_upsampler(model_or_folder, device or "cpu")
    raise TypeError(f"expected an Upsampler or a model folder, got {type(model_or_folder).__name__}")
