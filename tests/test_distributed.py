"""Two CPU processes (torchrun, gloo) train in lockstep and record exactly one MLflow run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_processes_hold_identical_weights_and_one_run(tmp_path, monkeypatch):
    store = tmp_path / "mlruns"
    env = {**os.environ, "UNCLIP_MLFLOW_DIR": str(store), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).with_name("distributed_check.py")), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hashes = [(tmp_path / f"rank{r}.sha").read_text().split() for r in (0, 1)]
    assert hashes[0][0] == hashes[1][0] == "2"
    assert hashes[0][1] == hashes[1][1], "ranks diverged"
    monkeypatch.setenv("UNCLIP_MLFLOW_DIR", str(store))
    from core import tracking

    tracking.configure()
    import mlflow

    runs = mlflow.search_runs(experiment_names=["unclip-distributed-test"])
    assert len(runs) == 1
    assert runs.iloc[0]["status"] == "FINISHED"
