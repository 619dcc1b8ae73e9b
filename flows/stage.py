"""What every training stage shares: skip when already registered, track, register behind the gate.

Plain functions here; the Prefect wrappers live in flows/train.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from core import registry, tracking
from core.checkpoint import write_json
from core.config import Config
from core.errors import UnclipError
from core.init_from import PARENT_PREFIX

log = logging.getLogger("flows")

# Bump when training code changes in a way that should retrain finished stages.
CODE_VERSION = "1"


@dataclass
class StageResult:
    stage: str
    model_name: str
    version: str
    folder: Path
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    promoted: bool | None = None
    run_id: str | None = None
    seconds: float = 0.0  # wall time of training, evaluation and registration (0 when reused)

    def markdown(self) -> str:
        state = "skipped (inputs unchanged, already registered)" if self.skipped else (
            "promoted to champion" if self.promoted else "registered as challenger, champion kept")
        rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(self.metrics.items()))
        return (f"### {self.stage}\n\nmodel `{self.model_name}` version {self.version}: {state}; MLflow run "
                f"`{self.run_id or '-'}`\n\n| metric | value |\n|---|---|\n{rows}\n")


def inputs_fingerprint(settings: Config, **inputs: Any) -> str:
    try:
        package = version("unclip")
    except PackageNotFoundError:
        package = "dev"
    blob = json.dumps({"settings": settings.model_dump(mode="json"), "inputs": inputs,
                       "code": [package, CODE_VERSION]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_folder(workdir: str | Path, stage: str, settings: Config, inputs: dict[str, Any]) -> Path:
    """Where a stage trains: one folder per inputs fingerprint, so an interrupted run resumes from its
    checkpoints and a run with changed settings starts afresh instead of meeting foreign ones."""
    return Path(workdir) / stage / inputs_fingerprint(settings, **inputs)


def run_stage(stage: str, model_name: str, settings: Config, inputs: dict[str, Any],
              train: Callable[[tracking.MlflowTracker], tuple[Path, dict[str, float]]],
              metric: str | tuple[str, ...], higher_is_better: bool = True, force: bool = False) -> StageResult:
    """Train `stage` unless a registered version was trained from the very same inputs.
    `metric` gates promotion; with several names, the first the evaluation produced is used. A stage
    fine-tuned from a parent (inputs["parent"]) is gated against the parent's figure (core.init_from)."""
    fp = inputs_fingerprint(settings, **inputs)
    existing = None if force else registry.find_version_by_tag(model_name, "inputs_fingerprint", fp)
    if existing is not None:
        log.info("%s: inputs unchanged, using %s version %s", stage, model_name, existing)
        folder = registry.download_model(model_name, existing)
        metrics = _read_metrics(folder)
        return StageResult(stage, model_name, existing, folder, metrics, skipped=True)
    tags = {"stage": stage, "inputs_fingerprint": fp, **{k: str(v) for k, v in inputs.items()}}
    start = time.perf_counter()
    with tracking.start_run(f"unclip-{stage}", run_name=f"{stage}-{fp[:8]}", tags=tags) as tracker:
        tracker.log_params({"settings": settings.model_dump(mode="json")})
        folder, metrics = train(tracker)
        metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        write_json(Path(folder) / "metrics.json", metrics)
        tracking.log_loss_curve(tracker)
        tracker.log_metrics({f"final.{k}": v for k, v in metrics.items()}, step=0)
        gate = next((m for m in ((metric,) if isinstance(metric, str) else metric) if m in metrics), None)
        if gate is None:
            raise UnclipError(f"{stage}: the evaluation produced none of {metric}; cannot gate the new model")
        decision = registry.register_model(tracker, folder, model_name, gate, metrics[gate], higher_is_better,
                                           tags={"inputs_fingerprint": fp, "stage": stage},
                                           baseline=metrics.get(PARENT_PREFIX + gate))
    log.info("%s: %s version %s %s (%s %.4f vs champion %s)", stage, model_name, decision.version,
             "promoted" if decision.promoted else "kept as challenger", metric, decision.value, decision.champion_value)
    return StageResult(stage, model_name, decision.version, Path(folder), metrics, promoted=decision.promoted,
                       run_id=tracker.run_id, seconds=time.perf_counter() - start)


def _read_metrics(folder: Path) -> dict[str, float]:
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}
