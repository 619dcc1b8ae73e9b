"""`flows.train --init-from`: which stages start from existing weights, and where those come from.

    --init-from models:/unclip-decoder@champion        # the stage is the one the registered name stands for
    --init-from decoder=models:/unclip-decoder/3       # a version
    --init-from decoder=runs/karlo/decoder             # a model folder (a converted one, for example)
    --init-from runs/karlo                             # a models folder: every stage it holds but the CLIP

The CLIP cannot start from weights here (this project trains open_clip CLIPs); a converted CLIP is
used as it is, registered by `python -m unclip.convert from-diffusers ... --register`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from clip.spec import ClipSpec, check_same_clip, sha256_files
from core import registry
from core.config import Config
from core.errors import ConfigError

STAGE_MODELS = {"prior": "unclip-prior", "decoder": "unclip-decoder", "upsampler1": "unclip-upsampler-1",
                "upsampler2": "unclip-upsampler-2"}
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class Parent(Config):
    """A stage's starting weights: the folder, and the registered name and version it came from."""

    stage: str
    folder: str
    name: str | None = None
    version: str | None = None
    weights_sha256: str

    def describe(self) -> str:
        return f"models:/{self.name}/{self.version}" if self.name else self.folder

    def inputs(self) -> dict[str, str]:
        """What the stage's inputs fingerprint and its MLflow run's tags record of the parent."""
        return {"parent": self.describe(), "parent_weights": self.weights_sha256}


def parse_init_from(values: Iterable[str]) -> dict[str, Parent]:
    """Each `--init-from` value resolved to its stage's Parent (registry versions are downloaded)."""
    parents: dict[str, Parent] = {}
    for value in values:
        stage, sep, ref = value.partition("=")
        if not sep or "/" in stage or ":" in stage:
            stage, ref = None, value
        elif stage not in STAGE_MODELS:
            raise ConfigError(f"--init-from {value}: {_no_stage(stage)}")
        for parent in _resolve(stage, ref.strip(), value):
            if parent.stage in parents:
                raise ConfigError(f"--init-from names the {parent.stage} twice")
            parents[parent.stage] = parent
    return parents


def check_init_from(values: Iterable[str], clip: str | None, stages: Iterable[str] | None) -> dict[str, Parent]:
    """`--init-from` checked before any flow starts: the references, and a parent prior or decoder trained
    with another CLIP than the run's (`--clip`, else the registered one when the CLIP is not trained now)."""
    parents = parse_init_from(values)
    conditioned = [parents[s] for s in ("prior", "decoder") if s in parents]
    if not conditioned or (clip is None and (stages is None or "clip" in stages)):
        return parents  # a CLIP trained in this run: the stage itself refuses a parent of another one
    spec = _clip_of_run(clip)
    for parent in conditioned:
        check_same_clip(ClipSpec.load(Path(parent.folder)), spec, f"--init-from {parent.stage}: {parent.describe()}")
    return parents


def _clip_of_run(clip: str | None) -> ClipSpec:
    from clip.pretrained import parse_clip_ref

    ref = parse_clip_ref(clip or "models:/unclip-clip@champion")
    return ref.spec if not ref.registered else ClipSpec.load(registry.download_model(ref.name, ref.ref))


def _resolve(stage: str | None, ref: str, value: str) -> list[Parent]:
    if ref.startswith("models:"):
        return [_from_registry(stage, ref, value)]
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"--init-from {value}: {folder} is not a folder (give a model folder, a models folder "
                          "or models:/NAME@ALIAS)")
    if stage is not None:
        return [_parent(stage, folder / stage if _stage_of(folder) is None and (folder / stage).is_dir() else folder,
                        value)]
    found = _stage_of(folder)
    if found is not None:
        return [_parent(found, folder, value)]
    parents = [_parent(name, folder / name, value) for name in STAGE_MODELS if _stage_of(folder / name) == name]
    if not parents:
        raise ConfigError(f"--init-from {value}: {folder} holds no prior, decoder or upsampler model")
    return parents


def _from_registry(stage: str | None, ref: str, value: str) -> Parent:
    match = _MODEL_URI.match(ref)
    if match is None:
        raise ConfigError(f"--init-from {value}: write a registered model as models:/NAME@ALIAS or models:/NAME/VERSION")
    name = match["name"]
    named = next((s for s, model in STAGE_MODELS.items() if model == name), None)
    if name == "unclip-clip":
        raise ConfigError(f"--init-from {value}: {_no_stage('clip')}")
    if named is None:
        raise ConfigError(f"--init-from {value}: {name!r} is not a stage model; choose one of "
                          f"{', '.join(STAGE_MODELS.values())}")
    if stage is not None and stage != named:
        raise ConfigError(f"--init-from {value}: {name} is the {named}'s model, not the {stage}'s")
    folder = registry.download_model(name, match["version"] or match["alias"])
    return _parent(named, folder, value, name=name, version=folder.name)


def _parent(stage: str, folder: Path, value: str, **registered) -> Parent:
    found = _stage_of(folder)
    if found != stage:
        raise ConfigError(f"--init-from {value}: {folder} is not a {stage} model folder"
                          + (f" (it holds a {found})" if found else ""))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"--init-from {value}: {folder} has no model.safetensors")
    return Parent(stage=stage, folder=str(folder.resolve()), weights_sha256=sha256_files([weights]), **registered)


def _stage_of(folder: Path) -> str | None:
    """Which stage's model a folder holds, by its config file."""
    from core.model_folder import read_model_config
    from decoder.io import DECODER
    from prior.io import PRIOR
    from upsamplers.io import UPSAMPLER

    for kind in (PRIOR, DECODER):
        if kind.holds(folder):
            return kind.name
    return f"upsampler{read_model_config(folder, UPSAMPLER).stage}" if UPSAMPLER.holds(folder) else None


def _no_stage(stage: str) -> str:
    if stage == "clip":
        return ("the CLIP cannot start from existing weights; register a converted CLIP with "
                "`python -m unclip.convert from-diffusers DIR --out MODELS --register` and train the other stages")
    return f"unknown stage {stage!r}; stages are {', '.join(STAGE_MODELS)}"
