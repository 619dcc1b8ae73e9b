"""Where the cascade's model folders come from: local folders, one models directory, or the registry.

A source only names a folder and its provenance (registered name and version); nothing is loaded
here except, for the registry, the download of the folders (cached by core.tracking).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import UnclipError
from unclip.errors import ModelNotFoundError

STAGES = ("clip", "prior", "decoder", "upsampler1", "upsampler2")
REQUIRED = ("clip", "prior", "decoder")
# The names flows.train registers each stage under (flows sits above this package, so they are repeated here).
REGISTERED_NAMES = {"clip": "unclip-clip", "prior": "unclip-prior", "decoder": "unclip-decoder",
                    "upsampler1": "unclip-upsampler-1", "upsampler2": "unclip-upsampler-2"}
TRAIN_HINT = ("train them with `python -m flows.train --preset demo` (registers every stage), "
              "or one stage with e.g. `python -m flows.train --preset demo --stage decoder`")


@dataclass(frozen=True)
class ModelSource:
    """One stage's model folder and where it came from (`name` is "folder" for local folders)."""

    stage: str
    folder: Path
    name: str = "folder"
    version: str | None = None

    def describe(self) -> dict[str, str | None]:
        return {"name": self.name, "version": self.version, "folder": str(self.folder)}


Sources = dict[str, ModelSource]


def from_folders(clip: str | Path, prior: str | Path, decoder: str | Path, upsampler1: str | Path | None = None,
                 upsampler2: str | Path | None = None) -> Sources:
    given = {"clip": clip, "prior": prior, "decoder": decoder, "upsampler1": upsampler1, "upsampler2": upsampler2}
    sources: Sources = {}
    for stage, folder in given.items():
        if folder is None:
            continue
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(f"{stage} model folder {path} does not exist; {TRAIN_HINT}")
        sources[stage] = ModelSource(stage, path.resolve())
    _check_chain(sources)
    return sources


def from_models_dir(root: str | Path) -> Sources:
    """A folder with one subfolder per stage: clip/ prior/ decoder/ [upsampler1/ [upsampler2/]]."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ModelNotFoundError(f"models folder {root} does not exist (expected subfolders "
                                 f"{'/, '.join(STAGES)}/, or use --models registry); {TRAIN_HINT}")
    present = {stage: root / stage for stage in STAGES if (root / stage).is_dir()}
    missing = [stage for stage in REQUIRED if stage not in present]
    if missing:
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise ModelNotFoundError(f"models folder {root} lacks {', '.join(missing)}/ (found: {', '.join(found) or 'nothing'}; "
                                 f"expected {'/, '.join(STAGES)}/ with the last two optional); {TRAIN_HINT}")
    return from_folders(**present)


def from_registry(ref: str | int = "champion", versions: Mapping[str, str | int] | None = None) -> Sources:
    """Download each stage's model (by `ref`, or the stage's entry of `versions`: a version or alias).
    The upsamplers are optional: a stage never registered is left out, an unknown alias is an error."""
    from core import registry as tracking  # imports MLflow: only when the registry is used

    versions = dict(versions or {})
    unknown = sorted(set(versions) - set(STAGES))
    if unknown:
        raise ModelNotFoundError(f"unknown stage(s) {', '.join(unknown)} in versions; stages are {', '.join(STAGES)}")
    registered = tracking.registered_models()
    sources: Sources = {}
    for stage in STAGES:
        name = REGISTERED_NAMES[stage]
        wanted = versions.get(stage, ref)
        if stage not in REQUIRED and name not in registered and stage not in versions:
            continue
        if stage in REQUIRED and name not in registered:
            listing = ", ".join(f"{n} ({', '.join(a) or 'no aliases'})" for n, a in sorted(registered.items()))
            raise ModelNotFoundError(f"no registered model {name!r} in {tracking.tracking_uri()} (registered: "
                                     f"{listing or 'none'}); {TRAIN_HINT}")
        try:
            folder = tracking.download_model(name, wanted)
        except UnclipError as err:  # unknown alias or version: the message lists the aliases
            raise ModelNotFoundError(str(err)) from None
        # download_model puts version N of a model in .../<name>/<N>
        sources[stage] = ModelSource(stage, Path(folder), name, Path(folder).name)
    _check_chain(sources)
    return sources


def _check_chain(sources: Sources) -> None:
    if "upsampler2" in sources and "upsampler1" not in sources:
        raise ModelNotFoundError("an upsampler2 without an upsampler1: the second upsampler takes the first's output")
