"""MLflow model registry: versions, the champion/challenger gate, loading by alias.

With core/tracking.py, the only module of core that talks to MLflow (the pipeline's pyfunc model,
which needs the whole cascade, is unclip/serving.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.errors import UnclipError
from core.tracking import MlflowTracker, configure, store_dir, tracking_uri

CHAMPION, CHALLENGER = "champion", "challenger"
TRAIN_HINT = "train the models with `python -m flows.train --preset demo` (or `make demo`)"


@dataclass(frozen=True)
class GateDecision:
    name: str
    version: str
    promoted: bool
    metric: str
    value: float
    champion_value: float | None


def register_model(tracker: MlflowTracker, folder: str | Path, name: str, metric: str, value: float,
                   higher_is_better: bool = True, tags: Mapping[str, str] | None = None,
                   baseline: float | None = None) -> GateDecision:
    """Log `folder` as the run's `model` artifact, register it as a new version of `name`, alias it
    `challenger`, and move `champion` to it only if it beats the current champion on `metric`; with a
    `baseline` (a fine-tuned model's parent, evaluated on the same data) only if it beats that."""
    client = MlflowClient()
    tracker.log_artifact(folder, "model")
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"unclip stage model ({metric} gates promotion)")
    source = f"{tracker.run.info.artifact_uri}/model"
    version_tags = {"metric": metric, "metric_value": repr(float(value)), **(tags or {})}
    mv = client.create_model_version(name, source=source, run_id=tracker.run_id, tags=version_tags)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    champion_value = None
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
        champion_value = float(champion.tags.get("metric_value", "nan"))
    except MlflowException:
        champion = None
    if baseline is not None:
        champion_value = float(baseline)
    if champion_value is None or not math.isfinite(champion_value):
        promoted = True
    else:
        promoted = value > champion_value if higher_is_better else value < champion_value
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    decision = GateDecision(name, str(mv.version), promoted, metric, float(value), champion_value)
    tracker.set_tags({"gate.decision": "promoted" if promoted else "kept champion", "gate.version": mv.version,
                      "gate.against": "parent" if baseline is not None else "champion"})
    tracker.log_metrics({"gate.challenger": float(value),
                         **({"gate.champion": champion_value} if champion_value is not None else {})}, step=0)
    return decision


def find_version_by_tag(name: str, key: str, value: str) -> str | None:
    """The newest registered version of `name` whose tag `key` equals `value` (used to skip finished stages)."""
    configure()
    try:
        found = MlflowClient().search_model_versions(f"name = '{name}' and tags.`{key}` = '{value}'")
    except MlflowException:
        return None
    return str(max(int(v.version) for v in found)) if found else None


def registered_models() -> dict[str, list[str]]:
    """Registered model names with their aliases."""
    configure()
    return {m.name: sorted(m.aliases) for m in MlflowClient().search_registered_models()}


def download_model(name: str, ref: str | int = CHAMPION) -> Path:
    """Local folder of `models:/name@alias` or `models:/name/version` (cached under the store)."""
    configure()
    client = MlflowClient()
    try:
        mv = client.get_model_version(name, str(ref)) if str(ref).isdigit() else client.get_model_version_by_alias(name, str(ref))
    except MlflowException:
        known = registered_models()
        if name not in known:
            raise UnclipError(f"no registered model {name!r} in {tracking_uri()} (registered: "
                              f"{', '.join(known) or 'none'}); {TRAIN_HINT}") from None
        raise UnclipError(f"model {name!r} has no version or alias {ref!r} (aliases: "
                          f"{', '.join(known[name]) or 'none'}); {TRAIN_HINT}") from None
    target = store_dir() / "downloads" / name / str(mv.version)
    if not (target / ".complete").is_file():
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(target))
        (target / ".complete").write_text(str(mv.version))
    return target
