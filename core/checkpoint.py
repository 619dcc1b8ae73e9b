"""Weights as safetensors with their config beside them, written atomically.

A model folder holds `model.safetensors` plus one JSON file per config object, so a
folder alone is enough to rebuild the model. Nothing here unpickles untrusted data.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.config import Config
from core.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"


def plain_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict safetensors can store: detached, contiguous, CPU, no shared storage."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def write_atomic(path: Path, write) -> None:
    """Write a file through a temporary sibling and rename it, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: Path, data: Any) -> None:
    text = data.to_json() if isinstance(data, Config) else json.dumps(data, indent=2, sort_keys=True)
    write_atomic(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None


def save_model_folder(
    folder: str | Path,
    weights: Mapping[str, torch.Tensor] | torch.nn.Module,
    configs: Mapping[str, Config | Mapping[str, Any]],
) -> Path:
    """Write weights and configs into `folder`, replacing it as a whole (staged, then renamed)."""
    folder = Path(folder)
    state = plain_state_dict(weights) if isinstance(weights, torch.nn.Module) else dict(weights)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(staging / WEIGHTS_FILE))
        for name, cfg in configs.items():
            write_json(staging / f"{name}.json", cfg)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def remove_leftovers(folder: Path) -> None:
    """Remove the staged copies (`.NAME.*`) a writer of `folder` killed mid-way left beside it."""
    for leftover in folder.parent.glob(f".{folder.name}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read weights {path}: {err} (truncated or not a safetensors file?)") from None


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> torch.nn.Module:
    """Load a state dict strictly, reporting missing, unexpected and wrongly shaped tensors in one line."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong[:3])}")
    if problems:
        raise CheckpointError(f"{where} does not match its config: " + ", ".join(problems))
    module.load_state_dict(state, strict=True)
    return module
