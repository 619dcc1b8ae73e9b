"""A trained prior on disk: one folder that is enough to rebuild and use it.

    model.safetensors   weights; the embedding normalisation stats are `prior.clip_mean` and
                        `prior.clip_std` (where diffusers/Karlo keep them)
    prior_config.json   PriorConfig (sizes, noise process, guidance dropout, normalisation rule)
    clip_spec.json      the CLIP whose embeddings it was trained on (its identity; the CLIP folder is loaded)
    train_info.json     where it came from (shards, step, metrics); informative only
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clip.spec import SPEC_FILE, ClipSpec, check_same_clip
from core.checkpoint import WEIGHTS_FILE, load_into, load_weights, read_json, save_model_folder
from core.errors import CheckpointError, ConfigError
from prior.config import PriorConfig
from prior.model import DiffusionPrior

CONFIG_FILE = "prior_config.json"
INFO_FILE = "train_info.json"


def save_prior(folder: str | Path, prior: DiffusionPrior, spec: ClipSpec,
               info: Mapping[str, Any] | None = None) -> Path:
    """Write the folder atomically (the old one, if any, is replaced as a whole)."""
    prior.stats()  # refuse to save a prior whose normalisation was never set
    configs = {CONFIG_FILE.removesuffix(".json"): prior.config, SPEC_FILE.removesuffix(".json"): spec.reference()}
    if info is not None:
        configs[INFO_FILE.removesuffix(".json")] = dict(info)
    return save_model_folder(folder, prior, configs)


def load_prior(folder: str | Path, expected_spec: ClipSpec | None = None,
               device: str | torch.device = "cpu") -> DiffusionPrior:
    """Rebuild a saved prior in eval mode; `expected_spec` is the CLIP it will be used with
    (ClipMismatchError if it was trained on another one)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a prior folder (no such directory)")
    try:
        config = PriorConfig.parse(read_json(folder / CONFIG_FILE))
    except ConfigError as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {err}") from None
    if not config.complete:
        raise CheckpointError(f"{folder / CONFIG_FILE} lacks the CLIP sizes (embed_dim, context_length, text_width)")
    spec = ClipSpec.load(folder)
    if expected_spec is not None:
        check_same_clip(spec, expected_spec, f"the prior in {folder}")
    if (config.embed_dim, config.context_length, config.text_width) != (
            spec.embed_dim, spec.context_length, spec.text_width):
        raise CheckpointError(f"{folder}: prior sizes do not match its own {SPEC_FILE}")
    prior = DiffusionPrior(config, clip_spec=spec)
    load_into(prior, load_weights(folder / WEIGHTS_FILE), f"prior weights {folder / WEIGHTS_FILE}")
    if not bool((prior.prior.clip_std > 0).all()):
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: normalisation std (prior.clip_std) is not positive")
    return prior.to(device).eval()


def read_info(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / INFO_FILE
    return read_json(path) if path.is_file() else {}
