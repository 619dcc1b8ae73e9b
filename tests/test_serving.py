"""The cascade's pyfunc model behind MLflow's scoring server (`mlflow models serve --env-manager
local` on 127.0.0.1, in a subprocess): a PNG for a good row, a 400 with a one-line reason and no
traceback or server path for each bad one. The logged model carries the project's code and pinned
third-party requirements, never a bare `unclip`."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from tiny_clips import make_open_clip

from unclip.testing import shared_tiny_models

FAST = "prior=2,decoder=2,upsampler1=1,upsampler2=1"
BAD_ROWS = [
    ({"prompt": "x", "seed": "abc"}, "seed"),
    ({"prompt": "x", "size": "abc"}, "size"),
    ({"prompt": None}, "prompt"),
    ({"seed": 3}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "   "}, "empty"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "seed": 1.5}, "seed"),
    ({"prompt": "x", "steps": "decoder=5000"}, "between 1 and 50"),
    ({"prompt": "x", "steps": "decodr=2"}, "unknown stage"),
    ({"prompt": "x", "steps": "prior=many"}, "whole number"),
    ({"prompt": "x", "size": 48}, "output size 48 is impossible"),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny cascade logged as unclip-pipeline into a private store, downloaded as a folder."""
    import mlflow

    from unclip.serving import log_pipeline

    models = shared_tiny_models(tmp_path_factory, make_open_clip)
    store = tmp_path_factory.mktemp("serving_mlruns")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNCLIP_MLFLOW_DIR", str(store))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        version = log_pipeline({stage: models / stage for stage in
                                ("clip", "prior", "decoder", "upsampler1", "upsampler2")})
        return Path(mlflow.artifacts.download_artifacts(f"models:/unclip-pipeline/{version}",
                                                        dst_path=str(tmp_path_factory.mktemp("served"))))


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})  # its uvicorn
    cwd = tmp_path_factory.mktemp("server_cwd")  # not the checkout: the model's own code must be what runs
    log = open(cwd / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir),
                                "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
                                "--workers", "1"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, cwd / "server.log")
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def wait_until_up(url: str, process: subprocess.Popen, log: Path, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the scoring server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the scoring server did not start in {seconds:g} s: {log.read_text()[-3000:]}")


def post(url: str, rows) -> tuple[int, str]:
    body = json.dumps({"dataframe_records": rows}).encode()
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_logged_model_carries_its_code_and_pinned_requirements(model_dir):
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert "unclip" not in {r.split("==")[0] for r in requirements}
    assert all("==" in r for r in requirements) and any(r.startswith("torch==") for r in requirements)
    assert {"unclip", "core", "clip", "prior", "decoder", "upsamplers", "data"} <= {
        p.name for p in (model_dir / "code").iterdir()}
    assert "serving_model.py" in (model_dir / "MLmodel").read_text()  # models-from-code, no pickle
    assert not list(model_dir.rglob("python_model.pkl"))


def test_a_good_request_gets_a_png(server):
    code, body = post(server, [{"prompt": "a red circle", "seed": 1, "steps": FAST},
                               {"prompt": "a blue square", "steps": 2, "size": 32}])
    assert code == 200, body
    sizes = [Image.open(io.BytesIO(base64.b64decode(row["image_png_base64"]))).size
             for row in json.loads(body)["predictions"]]
    assert sizes == [(64, 64), (32, 32)]


@pytest.mark.parametrize("row,reason", BAD_ROWS, ids=[json.dumps(r) for r, _ in BAD_ROWS])
def test_a_bad_row_is_a_400_with_one_line(server, model_dir, row, reason):
    code, body = post(server, [{"prompt": "fine", "steps": FAST}, row])
    assert code == 400, body
    message = json.loads(body)["message"]
    assert reason in message and "\n" not in message, message
    assert "Traceback" not in body and "site-packages" not in body and str(model_dir) not in body
    assert "stack_trace" not in json.loads(body)


def test_too_many_rows_are_refused_before_any_image(server):
    code, body = post(server, [{"prompt": "x"}] * 65)
    assert code == 400 and "between 1 and 64 rows" in json.loads(body)["message"]
