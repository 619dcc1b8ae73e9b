"""MLflow tracking: the one module that talks to MLflow for runs, metrics and images.

Default store: a sqlite database and an artifact folder under `./mlruns` (override the folder
with UNCLIP_MLFLOW_DIR, or the whole store with MLFLOW_TRACKING_URI, e.g. a tracking server).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient


def store_dir() -> Path:
    return Path(os.environ.get("UNCLIP_MLFLOW_DIR", "mlruns")).resolve()


# mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI: every store we chose is remembered, so an
# environment that still (or again) holds one of them is not taken for the user's choice
_ours: set[str] = set()


def user_tracking_uri() -> str | None:
    """MLFLOW_TRACKING_URI when the user set it (not when it is one of our own earlier choices)."""
    value = os.environ.get("MLFLOW_TRACKING_URI")
    return value if value and value not in _ours else None


def tracking_uri() -> str:
    return user_tracking_uri() or f"sqlite:///{store_dir() / 'mlflow.db'}"


def configure() -> str:
    """Point MLflow at the store; create the local folder for the embedded default."""
    uri = tracking_uri()
    if user_tracking_uri() is None:
        store_dir().mkdir(parents=True, exist_ok=True)
        _ours.add(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    configure()
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if user_tracking_uri() is None:
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


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (or a plain single process)."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def main_process_run(experiment: str, enabled: bool = True, **kw: Any) -> Iterator[MlflowTracker | None]:
    """An MLflow run on rank 0 only; other ranks (and `enabled=False`) get None."""
    if not enabled or not is_main_process():
        yield None
        return
    with start_run(experiment, **kw) as tracker:
        yield tracker


_PLOTTING = threading.Lock()  # matplotlib's text layout (pyparsing) is not thread-safe; stages run in lanes


def log_loss_curve(tracker: MlflowTracker, metric: str = "loss") -> None:
    """Plot the run's `metric` history to a PNG logged beside it (the UI's chart is not an artifact)."""
    history = MlflowClient().get_metric_history(tracker.run_id, metric)
    if len(history) < 2:
        return
    with _PLOTTING:
        _plot_curve(history, metric)


def _plot_curve(history, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = zip(*sorted((m.step, m.value) for m in history))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, values)
    ax.set(xlabel="step", ylabel=metric, yscale="log" if min(values) > 0 else "linear", title=f"training {metric}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    mlflow.log_figure(fig, f"curves/{metric}.png")
    plt.close(fig)
