"""Starting a stage's training from existing weights instead of from scratch (fine-tuning).

Every stage's training function takes `init_from`, a model folder of that stage (a registered version
or a converted Karlo model). The stage loads it with its own loader, which checks that the weights
were trained with the CLIP of the shards, and trains the parent's architecture: the preset's model
settings give way to the parent's config. The parent is evaluated before training, as
`parent.<metric>`, so the registry gate can compare the result with where it started.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from core.errors import CheckpointError

M = TypeVar("M", bound=torch.nn.Module)
PARENT_PREFIX = "parent."


def start_from(folder: str | Path, load: Callable[[Path], M], stage: str) -> M:
    """The stage's model loaded from `folder` by the stage's own `load`, ready to train."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"init_from: the {stage} folder {folder} does not exist")
    return load(folder).train()


def parent_metrics(evaluate: Callable[[torch.nn.Module, int], dict] | None, model: torch.nn.Module) -> dict[str, float]:
    """The stage's evaluation of the starting weights, each figure named `parent.<metric>`."""
    if evaluate is None:
        return {}
    was_training = model.training
    results = evaluate(model.eval(), 0)
    model.train(was_training)
    return {PARENT_PREFIX + k: float(v) for k, v in results.items() if isinstance(v, int | float)}
