"""MLflow tracking: the one module that talks to MLflow for runs, metrics and images.

Default store: a sqlite database and an artifact folder under `./mlruns` (override the folder
with UNCLIP_MLFLOW_DIR, or the whole store with MLFLOW_TRACKING_URI, e.g. a tracking server).
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


def store_dir() -> Path:
    return Path(os.environ.get("UNCLIP_MLFLOW_DIR", "mlruns")).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_dir() / 'mlflow.db'}"


def configure() -> str:
    """Point MLflow at the store; create the local folder for the embedded default."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ:
        store_dir().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    configure()
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if "MLFLOW_TRACKING_URI" not in os.environ:
        location = (store_dir() / "artifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


class MlflowTracker:
    """What the training loop logs to; one MLflow run."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.run_id = run.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        mlflow.log_params(flatten(params))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_image(self, image: Any, name: str, step: int) -> None:
        mlflow.log_image(image, key=name, step=step)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=folder)
        else:
            mlflow.log_artifact(str(path), artifact_path=folder)


@contextmanager
def start_run(experiment: str, run_name: str | None = None, tags: Mapping[str, Any] | None = None) -> Iterator[MlflowTracker]:
    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        tracker = MlflowTracker(run)
        tracker.set_tags({"git_commit": git_commit(), **(tags or {})})
        yield tracker


# ---- model registry -------------------------------------------------------------------------

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
                   higher_is_better: bool = True, tags: Mapping[str, str] | None = None) -> GateDecision:
    """Log `folder` as the run's `model` artifact, register it as a new version of `name`, alias it
    `challenger`, and move `champion` to it only if it beats the current champion on `metric`."""
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
    if champion_value is None or not math.isfinite(champion_value):
        promoted = True
    else:
        promoted = value > champion_value if higher_is_better else value < champion_value
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    decision = GateDecision(name, str(mv.version), promoted, metric, float(value), champion_value)
    tracker.set_tags({"gate.decision": "promoted" if promoted else "kept champion", "gate.version": mv.version})
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
    from core.errors import UnclipError

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
