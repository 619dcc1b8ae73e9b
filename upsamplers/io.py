"""An upsampler on disk: `model.safetensors` + `upsampler_config.json` (+ optional extra configs)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import WEIGHTS_FILE, load_into, load_weights, read_json, save_model_folder
from core.config import Config
from core.errors import CheckpointError, ConfigError
from upsamplers.config import UpsamplerConfig
from upsamplers.model import Upsampler

CONFIG_NAME = "upsampler_config"


def save_upsampler(folder: str | Path, model: Upsampler, extra: Mapping[str, Config | Mapping[str, Any]] | None = None) -> Path:
    """Write the weights and the config that rebuilds them (plus e.g. the training settings)."""
    return save_model_folder(folder, model, {CONFIG_NAME: model.cfg, **(extra or {})})


def read_config(folder: str | Path) -> UpsamplerConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"upsampler folder {folder} does not exist")
    try:
        return UpsamplerConfig.parse(read_json(folder / f"{CONFIG_NAME}.json"))
    except ConfigError as err:
        raise CheckpointError(f"{folder / (CONFIG_NAME + '.json')} is not a valid upsampler config: {err}") from None


def load_upsampler(folder: str | Path, device: torch.device | str = "cpu") -> Upsampler:
    """Rebuild the model from its folder, in eval mode; any problem is one CheckpointError."""
    cfg = read_config(folder)
    model = Upsampler(cfg)
    load_into(model, load_weights(Path(folder) / WEIGHTS_FILE), f"upsampler {folder}")
    return model.to(device).eval()


def as_model(model_or_folder: Upsampler | str | Path, device: torch.device | str | None = None) -> Upsampler:
    """Accept a loaded upsampler or its folder."""
    if isinstance(model_or_folder, Upsampler):
        return model_or_folder if device is None else model_or_folder.to(device)
    if isinstance(model_or_folder, str | Path):
        return load_upsampler(model_or_folder, device or "cpu")
    raise TypeError(f"expected an Upsampler or a model folder, got {type(model_or_folder).__name__}")
