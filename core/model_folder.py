"""One way to save and load a model folder, as diffusers' `save_pretrained` / `from_pretrained`:
`model.safetensors` beside `<kind>_config.json`, the config that rebuilds the network.

Each stage declares its kind once, in its io module (`PRIOR = ModelKind("prior", PriorConfig,
DiffusionPrior)`), and adds only what is its own: the CLIP it was trained with, extra checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import WEIGHTS_FILE, load_into, load_weights, read_json, save_model_folder
from core.config import Config
from core.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class ModelKind:
    """A stage's network class and the config class it is built from."""

    name: str
    config_class: type[Config]
    network: Callable[..., torch.nn.Module]

    @property
    def config_file(self) -> str:
        return f"{self.name}_config.json"

    def holds(self, folder: str | Path) -> bool:
        """Whether `folder` holds a model of this kind (by its config file)."""
        return (Path(folder) / self.config_file).is_file()


def save_model(folder: str | Path, weights: torch.nn.Module | Mapping[str, torch.Tensor], kind: ModelKind,
               config: Config, extra: Mapping[str, Config | Mapping[str, Any]] | None = None) -> Path:
    """Write the weights, the config under its kind's file name and any `extra` JSON files (by name)."""
    return save_model_folder(folder, weights, {kind.config_file.removesuffix(".json"): config, **(extra or {})})


def read_model_config(folder: str | Path, kind: ModelKind) -> Config:
    """The folder's config; a missing folder or file, or an invalid config, is a CheckpointError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{kind.name} folder {folder} does not exist (no such directory)")
    path = folder / kind.config_file
    try:
        return kind.config_class.parse(read_json(path))
    except ConfigError as err:
        raise CheckpointError(f"{path} is not a valid {kind.name} config: {err}") from None


def load_model_folder(folder: str | Path, kind: ModelKind, device: str | torch.device = "cpu",
                      config: Config | None = None, **network_kw: Any) -> torch.nn.Module:
    """The network rebuilt from the folder's config (or from `config`, already read from it) with the
    folder's weights, in eval mode on `device`; `network_kw` go to the network class."""
    folder = Path(folder)
    config = read_model_config(folder, kind) if config is None else config
    model = kind.network(config, **network_kw)
    load_into(model, load_weights(folder / WEIGHTS_FILE), f"{kind.name} weights {folder / WEIGHTS_FILE}")
    return model.to(device).eval()
