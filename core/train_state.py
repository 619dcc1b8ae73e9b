"""Training checkpoints: weights, EMA, optimizer and loop position, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import load_into, load_weights, plain_state_dict, read_json
from core.ema import EMA
from core.errors import CheckpointError

PREFIX = "step_"
STAGING = ".staging_"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def find_latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (incomplete ones are staged under a dot-name and never match)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file())
    return done[-1] if done else None


def remove_staging(run_dir: Path) -> None:
    """Remove the half-written checkpoints of runs killed while saving (one writer per run folder)."""
    root = checkpoint_dir(run_dir)
    if root.is_dir():
        for leftover in root.glob(f"{STAGING}*"):
            shutil.rmtree(leftover, ignore_errors=True)


def non_finite_count(module: torch.nn.Module) -> int:
    return sum(int((~torch.isfinite(v)).sum()) for v in module.state_dict().values() if v.is_floating_point())


def save_checkpoint(run_dir: Path, step: int, model, ema: EMA, optimizer, state: dict[str, Any], keep: int) -> Path:
    """Write a checkpoint atomically; weights with NaN or inf are never saved (CheckpointError)."""
    for what, module in (("model", model), ("EMA", ema.shadow)):
        if bad := non_finite_count(module):
            raise CheckpointError(f"refusing to checkpoint step {step}: the {what} weights hold {bad} "
                                  "non-finite values; lower train.lr")
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    remove_staging(run_dir)
    final = root / f"{PREFIX}{step:08d}"
    staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=root))
    try:
        from safetensors.torch import save_file

        save_file(plain_state_dict(model), str(staging / "model.safetensors"))
        save_file(plain_state_dict(ema.shadow), str(staging / "ema.safetensors"))
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        full = {**state, "ema_updates": ema.updates}
        (staging / "state.json").write_text(json.dumps(full, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in sorted(p for p in root.iterdir() if p.name.startswith(PREFIX))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model, ema: EMA, optimizer, identity: dict[str, Any]) -> dict[str, Any]:
    """Restore everything in place; refuse a checkpoint written by a different configuration."""
    state = read_json(path / "state.json")
    saved = state.get("identity")
    if _comparable(saved) != _comparable(identity):
        raise CheckpointError(
            f"{path} was written by a different configuration; resume with the same settings "
            "(only `steps` may grow) or choose a new output folder")
    load_into(model, load_weights(path / "model.safetensors"), f"checkpoint {path}")
    load_into(ema.shadow, load_weights(path / "ema.safetensors"), f"checkpoint {path} (EMA)")
    if non_finite_count(model) or non_finite_count(ema.shadow):
        raise CheckpointError(f"{path} holds non-finite weights (written before they were checked); delete it "
                              "and resume from an earlier checkpoint or start afresh")
    try:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    except (OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"cannot read optimizer state in {path}: {err}") from None
    ema.updates = state["ema_updates"]
    state["losses"] = [tuple(x) for x in state["losses"]]
    return state


def _comparable(identity: dict[str, Any] | None) -> Any:
    """Identity without the fields that may change between a run and its resumption."""
    if identity is None:
        return None
    train = {k: v for k, v in identity["train"].items() if k not in {"steps", "checkpoint_every", "eval_every", "log_every", "keep_checkpoints"}}
    return {"train": train, "run": identity["run"]}
