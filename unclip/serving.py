"""The whole cascade as one MLflow pyfunc model, for `mlflow models serve`.

Logged with MLflow's models-from-code: unclip/serving_model.py is the model, the project's packages
travel with it as `code_paths`, and its requirements are the third-party packages pinned to the
versions installed here, so serving never installs a package by this project's (unowned) PyPI name.
The input schema is an MLflow signature; every row is checked before any image is computed, and a
bad row is one line of reason in an HTTP 400, without a traceback.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.types.schema import AnyType, ColSpec, Schema

from core.errors import UnclipError

log = logging.getLogger("unclip.serving")
PIPELINE_MODEL = "unclip-pipeline"
STAGES = ("clip", "prior", "decoder", "upsampler1", "upsampler2")
PACKAGES = ("unclip", "core", "clip", "prior", "decoder", "upsamplers", "data")  # what the pipeline imports
REQUIREMENTS = ("mlflow", "torch", "torchvision", "open_clip_torch", "transformers", "diffusers", "accelerate",
                "safetensors", "pillow", "numpy", "pandas", "pydantic", "tqdm")
MODEL_FILE = Path(__file__).with_name("serving_model.py")
MAX_ROWS = 64  # images per request: a slip must not keep a server busy for an hour
MAX_SEED = 2**32 - 1
# The columns a request may hold. `prompt` is required, but optional in the schema: MLflow's own
# report of a missing column spans several lines and repeats the request, ours is one line. The
# numbers are typed `any` and checked by `check_row`: MLflow cannot cast an integer column in which
# some rows leave the value out, and refuses the whole request.
SIGNATURE = ModelSignature(inputs=Schema([
    ColSpec("string", "prompt", required=False),
    ColSpec(AnyType(), "seed", required=False),  # an integer in [0, 2**32 - 1]; default 0
    ColSpec(AnyType(), "steps", required=False),  # "prior=8,decoder=10", or one number for every stage
    ColSpec(AnyType(), "size", required=False),  # the output side; default the largest
]), outputs=Schema([ColSpec("string", "image_png_base64")]))


class OneLineError(MlflowException):
    """An error whose HTTP body is one line of reason. The scoring server prefixes a failed
    prediction's message with the whole request (a DataFrame over many lines), and adds a traceback
    with the server's paths to any other exception; this message ignores that rewrite."""

    def __init__(self, reason: str, error_code: int = INTERNAL_ERROR) -> None:
        super().__init__(reason, error_code=error_code)

    @property
    def message(self) -> str:
        return self._reason

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_reason"):
            self._reason = " ".join(str(value).split())


class ServingInputError(OneLineError):
    """A bad request row: an HTTP 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class Request:
    prompt: str
    seed: int
    steps: dict[str, str]
    size: int | None


class PipelineModel(mlflow.pyfunc.PythonModel):
    """`predict` takes rows with `prompt` (and optional `seed`, `steps`, `size`) and returns them with
    `image_png_base64`: one PNG per row."""

    def load_context(self, context) -> None:
        from unclip import UnclipPipeline

        art = context.artifacts
        self.pipe = UnclipPipeline.from_folders(art["clip"], art["prior"], art["decoder"], art.get("upsampler1"),
                                                art.get("upsampler2"), progress=False)

    def predict(self, context, model_input, params=None):
        import pandas as pd

        rows = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if not 1 <= len(rows) <= MAX_ROWS:
            raise ServingInputError(f"send between 1 and {MAX_ROWS} rows, got {len(rows)}")
        requests = [self.check_row(i, row) for i, (_, row) in enumerate(rows.iterrows())]
        out = rows.copy()
        out["image_png_base64"] = [self.draw(i, r) for i, r in enumerate(requests)]
        return out

    def check_row(self, index: int, row) -> Request:
        """The row as a request the models can honour, or ServingInputError naming what is wrong."""
        from unclip.pipeline import check_prompts
        from unclip.settings import SAMPLED, parse_stage_values

        where = f"row {index + 1}"
        try:
            prompt = _cell(row, "prompt")
            if not isinstance(prompt, str):
                raise ServingInputError(f"{where}: 'prompt' must be text, got {_shown(prompt)}")
            steps = _cell(row, "steps")
            if isinstance(steps, numbers.Number) and not isinstance(steps, bool):
                steps = str(_integer(where, "steps", steps, 1, 10_000))
            if steps is not None and not isinstance(steps, str):
                raise ServingInputError(f"{where}: 'steps' must be text such as \"prior=8,decoder=10\", "
                                        f"got {_shown(steps)}")
            request = Request(check_prompts([prompt])[0], _integer(where, "seed", _cell(row, "seed"), 0, MAX_SEED, 0),
                              parse_stage_values(steps, SAMPLED, "steps"),
                              _integer(where, "size", _cell(row, "size"), 1, 8192))
            self.pipe.plan(steps=request.steps, output_size=request.size)  # steps and size, from the configs
        except UnclipError as err:
            raise ServingInputError(f"{where}: {err}") from None
        return request

    def draw(self, index: int, request: Request) -> str:
        try:
            image = self.pipe.generate(request.prompt, seed=request.seed, steps=request.steps,
                                       output_size=request.size)[0]
        except Exception:  # a fault of the server, not of the request: the traceback goes to its log
            log.exception("row %d: generation failed", index + 1)
            raise OneLineError(f"row {index + 1}: generation failed on the server (see its log)") from None
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(row, key: str):
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _integer(where: str, key: str, value: Any, low: int, high: int, default: int | None = None) -> int | None:
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value != int(value):
        raise ServingInputError(f"{where}: {key!r} must be a whole number, got {_shown(value)}")
    if not low <= int(value) <= high:
        raise ServingInputError(f"{where}: {key!r} must be between {low} and {high}, got {int(value)}")
    return int(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def requirements() -> list[str]:
    """The serving environment: the third-party packages the pipeline imports, at the versions in use."""
    pinned = []
    for name in REQUIREMENTS:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pinned


def code_paths() -> list[str]:
    root = Path(__file__).resolve().parent.parent
    return [str(root / name) for name in PACKAGES]


def log_pipeline(folders: Mapping[str, str | Path], experiment: str = PIPELINE_MODEL,
                 tags: Mapping[str, str] | None = None) -> str:
    """Log the cascade's model folders as one pyfunc model, register it, alias it champion; returns
    the version."""
    from mlflow.tracking import MlflowClient

    from core.tracking import start_run

    artifacts = {k: str(v) for k, v in folders.items() if k in STAGES and v is not None}
    with start_run(experiment, run_name="pipeline", tags=dict(tags or {})) as tracker:
        info = mlflow.pyfunc.log_model(name="pipeline", python_model=str(MODEL_FILE), artifacts=artifacts,
                                       code_paths=code_paths(), signature=SIGNATURE,
                                       pip_requirements=requirements())
        mv = mlflow.register_model(info.model_uri, PIPELINE_MODEL, tags=dict(tags or {}))
        tracker.set_tags({"pipeline.version": mv.version})
    MlflowClient().set_registered_model_alias(PIPELINE_MODEL, "champion", mv.version)
    return str(mv.version)


def register_champions() -> str | None:
    """unclip-pipeline made of every stage's champion: registered once per set of champions (a rerun
    that changes no stage registers nothing); None while the cascade lacks a stage."""
    from core import registry
    from unclip.sources import REGISTERED_NAMES, REQUIRED

    folders = {}
    for stage in STAGES:
        try:
            folders[stage] = registry.download_model(REGISTERED_NAMES[stage], registry.CHAMPION)
        except UnclipError:
            if stage in REQUIRED:
                return None
            break  # an upsampler2 without an upsampler1 is no cascade
    stage_versions = ",".join(f"{stage}={folder.name}" for stage, folder in folders.items())
    existing = registry.find_version_by_tag(PIPELINE_MODEL, "stage_versions", stage_versions)
    return existing or log_pipeline(folders, tags={"stage_versions": stage_versions})


def load_pipeline(ref: str | int = "champion"):
    from core.tracking import configure

    configure()
    uri = f"models:/{PIPELINE_MODEL}/{ref}" if str(ref).isdigit() else f"models:/{PIPELINE_MODEL}@{ref}"
    return mlflow.pyfunc.load_model(uri)
