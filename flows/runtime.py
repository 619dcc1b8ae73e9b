"""Environment for running flows locally: quiet Prefect without a server, offline hub, one-line errors."""

from __future__ import annotations

import logging
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


class UserErrorsInOneLine(logging.Filter):
    """Prefect logs a run that raised with its whole traceback, then its failed state. For a user
    error (UnclipError) the command line prints the one-line reason itself, so the console drops
    those records; the API log (the Prefect UI) keeps them."""

    RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")

    def __init__(self) -> None:
        super().__init__()
        self.reasons: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.RUN_LOGGERS):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, UnclipError):
            self.reasons.add(str(error))
            return False
        message = record.getMessage()
        return not any(reason and reason in message for reason in self.reasons)


_FILTER = UserErrorsInOneLine()


def quiet_user_errors() -> None:
    """Put the filter on the console handlers Prefect configured (on the root logger)."""
    import prefect  # noqa: F401  (configures Prefect's logging, if no flow module did yet)

    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def run_flow_cli(job: Callable[[], object]) -> int:
    local_defaults()
    quiet_user_errors()

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
