"""MLflow registry gate, skip-if-registered stages and registry errors (tiny fake stages)."""

from __future__ import annotations

import json

import pytest

from core import registry, tracking
from core.errors import UnclipError
from data import DatasetConfig
from flows.stage import run_stage


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("UNCLIP_MLFLOW_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def fake_stage(tmp_path, score: float, calls: list):
    def train(tracker):
        calls.append(score)
        folder = tmp_path / f"model-{len(calls)}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "config.json").write_text(json.dumps({"score": score}))
        tracker.log_metrics({"loss": 1.0}, step=1)
        return folder, {"score": score, "note": "text is dropped"}
    return train


def test_gate_promotes_only_a_better_challenger(store):
    calls = []
    first = run_stage("toy", "unclip-toy", DatasetConfig(seed=1), {}, fake_stage(store, 0.5, calls), "score")
    assert first.promoted and first.version == "1"
    worse = run_stage("toy", "unclip-toy", DatasetConfig(seed=2), {}, fake_stage(store, 0.4, calls), "score")
    assert not worse.promoted
    better = run_stage("toy", "unclip-toy", DatasetConfig(seed=3), {}, fake_stage(store, 0.9, calls), "score")
    assert better.promoted
    champion = registry.download_model("unclip-toy", "champion")
    assert json.loads((champion / "config.json").read_text()) == {"score": 0.9}
    assert json.loads((champion / "metrics.json").read_text()) == {"score": 0.9}
    assert set(registry.registered_models()["unclip-toy"]) == {"champion", "challenger"}
    lower_is_better = run_stage("toy", "unclip-toy", DatasetConfig(seed=4), {}, fake_stage(store, 0.1, calls),
                                "score", higher_is_better=False)
    assert lower_is_better.promoted


def test_unchanged_inputs_skip_training(store):
    calls = []
    settings = DatasetConfig(seed=7)
    first = run_stage("toy", "unclip-toy", settings, {"data": "abc"}, fake_stage(store, 0.5, calls), "score")
    again = run_stage("toy", "unclip-toy", settings, {"data": "abc"}, fake_stage(store, 0.6, calls), "score")
    assert calls == [0.5] and again.skipped and again.version == first.version
    assert again.metrics == {"score": 0.5}
    changed = run_stage("toy", "unclip-toy", settings, {"data": "xyz"}, fake_stage(store, 0.6, calls), "score")
    assert calls == [0.5, 0.6] and not changed.skipped
    forced = run_stage("toy", "unclip-toy", settings, {"data": "abc"}, fake_stage(store, 0.7, calls), "score",
                       force=True)
    assert not forced.skipped and calls[-1] == 0.7


def test_empty_registry_and_missing_alias_are_clear_errors(store):
    with pytest.raises(UnclipError, match="no registered model 'unclip-prior'.*flows.train"):
        registry.download_model("unclip-prior")
    run_stage("toy", "unclip-toy", DatasetConfig(), {}, fake_stage(store, 0.5, []), "score")
    with pytest.raises(UnclipError, match="no version or alias 'staging'.*champion"):
        registry.download_model("unclip-toy", "staging")
    assert registry.download_model("unclip-toy", 1).is_dir()


def test_default_store_is_sqlite_under_the_store_dir(store):
    assert tracking.tracking_uri() == f"sqlite:///{store / 'mlruns' / 'mlflow.db'}"


def test_loss_curve_is_logged_as_an_image(store):
    import mlflow

    with tracking.start_run("curves") as tracker:
        for step, value in enumerate([1.0, 0.5, 0.3, 0.2]):
            tracker.log_metrics({"loss": value}, step=step)
        tracking.log_loss_curve(tracker)
    files = [f.path for f in mlflow.MlflowClient().list_artifacts(tracker.run_id, "curves")]
    assert files == ["curves/loss.png"]
