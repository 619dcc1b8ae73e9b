"""Test-session environment: offline hub, a private MLflow store and a quiet, fast Prefect."""

from __future__ import annotations

import os
import tempfile

_home = tempfile.mkdtemp(prefix="unclip-tests-")
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "UNCLIP_MLFLOW_DIR": os.path.join(_home, "mlruns"),
    "PREFECT_HOME": os.path.join(_home, "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TQDM_DISABLE": "1",
}.items():
    os.environ.setdefault(key, value)
os.environ.pop("MLFLOW_TRACKING_URI", None)
