"""A real Prefect server on 127.0.0.1: deploy prefect.yaml to a process work pool, run the CLIP
stage deployment on tiny settings through a worker, and find its model in the MLflow registry."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY = ["clip.data.num_examples=120", "clip.data.val_size=20", "clip.eval_size=20", "clip.train.steps=2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"prefect server not healthy after {timeout:.0f} s")


@pytest.fixture()
def server(tmp_path):
    port = free_port()
    # MLflow exports the tracking URI an earlier test chose: the worker must use this test's own store
    inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env = {**inherited, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "UNCLIP_MLFLOW_DIR": str(tmp_path / "mlruns"),
           "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_DATABASE_CONNECTION_URL":
           f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"}
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api/health", proc, timeout=180)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def prefect(env, *args, timeout=300) -> subprocess.CompletedProcess:
    out = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


@pytest.mark.slow
def test_deployed_clip_stage_runs_through_a_worker_and_registers(server, tmp_path, monkeypatch):
    env = {**server, "PWD": str(ROOT)}
    prefect(env, "work-pool", "create", "unclip-process", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--all")
    run = subprocess.run(
        [sys.executable, "-c",
         "import json, sys; from prefect.deployments import run_deployment;"
         "r = run_deployment('train-cascade/clip', parameters=json.loads(sys.argv[1]), timeout=0);"
         "print(r.id)",
         f'{{"preset": "smoke", "workdir": "{tmp_path / "work"}", "stages": ["clip"], "overrides": {TINY!r}}}'
         .replace("'", '"')],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    flow_run_id = run.stdout.strip().splitlines()[-1]
    worker = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", "unclip-process", "--run-once"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert worker.returncode == 0, worker.stderr[-3000:]
    state = subprocess.run(
        [sys.executable, "-c",
         "import asyncio, sys; from prefect.client.orchestration import get_client\n"
         "async def main():\n"
         "    async with get_client() as c:\n"
         "        r = await c.read_flow_run(sys.argv[1]); print(r.state.type.value)\n"
         "asyncio.run(main())", flow_run_id],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert state.stdout.strip().splitlines()[-1] == "COMPLETED", worker.stdout[-3000:] + worker.stderr[-3000:]
    monkeypatch.setenv("UNCLIP_MLFLOW_DIR", env["UNCLIP_MLFLOW_DIR"])
    from core import registry

    assert "champion" in registry.registered_models()["unclip-clip"]
