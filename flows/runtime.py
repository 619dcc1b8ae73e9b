"""Environment for running flows locally: quiet Prefect without a server, offline hub, one-line errors."""

from __future__ import annotations

import os
from collections.abc import Callable

from core.cli import run_cli
from core.errors import UnclipError


def local_defaults() -> None:
    """Defaults that make a flow start fast on a laptop; any value the user set wins."""
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }.items():
        os.environ.setdefault(key, value)


def run_flow_cli(job: Callable[[], object]) -> int:
    local_defaults()

    def guarded() -> object:
        try:
            return job()
        except RuntimeError as err:
            if "ephemeral Prefect API server" in str(err):
                raise UnclipError(
                    "Prefect's temporary local server did not start in time (busy machine?); raise "
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or start `prefect server start` and set "
                    "PREFECT_API_URL=http://127.0.0.1:4200/api") from None
            raise
    return run_cli(guarded)
