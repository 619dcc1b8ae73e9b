"""`--register`: converted model folders as new versions in the MLflow registry, one run per stage.

A converted model has no evaluation here, so it becomes a stage's champion only where the stage has
none yet (a fresh store); next to champions trained here it is registered as the challenger, to be
picked by version or alias (`flows.generate --version ...`, `flows.train --init-from models:/NAME/VERSION`).
"""

from __future__ import annotations

from pathlib import Path

from unclip.sources import REGISTERED_NAMES


def register_converted(folders: dict[str, Path], source: str) -> dict[str, object]:
    """Register every stage folder under its model name; returns each stage's gate decision."""
    from core import registry, tracking  # imports MLflow: only when registering

    decisions = {}
    for stage, folder in folders.items():
        tags = {"stage": stage, "converted_from": source}
        with tracking.start_run("unclip-convert", run_name=f"convert-{stage}", tags=tags) as tracker:
            tracker.log_params(tags)
            decisions[stage] = registry.register_model(tracker, folder, REGISTERED_NAMES[stage], "converted",
                                                       float("nan"), tags=tags)
    return decisions
