"""`ClipSpec`: which CLIP a model was trained against, as a frozen, serialisable record.

Every stage stores the spec of the CLIP it was trained with beside its weights, and checks it
against the CLIP in use with `check_same_clip`. The fingerprint names the CLIP's identity (its
weights' content hash and dimensions), not where its files happen to live.

A CLIP model folder names its files relative to itself, so a copied folder or a registry download
loads its own files, pinned by their sha256, and nothing outside it. A prior's or decoder's
clip_spec.json only identifies the CLIP (`reference()`): the CLIP folder is what is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from core.config import Config
from core.errors import CheckpointError, ClipMismatchError, ConfigError

SPEC_FILE = "clip_spec.json"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_PATH_FIELDS = ("model", "pretrained")


class ClipSpec(Config):
    """The CLIP in use: how to load it and the dimensions every stage depends on.

    `model`: open_clip registered name (e.g. "ViT-B-32") or path to an open_clip model-config
    JSON file; hf: a `CLIPModel.save_pretrained` directory (or a text tower alone). `pretrained`
    (open_clip only): a pretrained tag or a local weights file. `weights_sha256` pins the weights'
    content. Relative paths in a saved spec are relative to its folder. `image_size` is None for a
    CLIP without an image tower (a converted Karlo text encoder); `normalise` false hands the stages
    CLIP's raw projected embeddings, which Karlo's prior and decoder were trained on.
    """

    backend: Literal["open_clip", "hf"]
    model: str = Field(min_length=1)
    pretrained: str | None = None
    weights_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    embed_dim: int = Field(gt=0)
    image_size: int | None = Field(gt=0)
    context_length: int = Field(gt=0)
    text_width: int = Field(gt=0)
    normalise: bool = True

    @property
    def has_image_tower(self) -> bool:
        return self.image_size is not None

    @model_validator(mode="after")
    def _hf_weights_live_in_model_dir(self) -> Self:
        if self.backend == "hf" and self.pretrained is not None:
            raise ValueError("hf CLIPs keep their weights in the `model` directory; leave `pretrained` unset")
        return self

    @classmethod
    def resolve(cls, backend: str, model: str | Path, pretrained: str | Path | None = None) -> ClipSpec:
        """Load the CLIP once to read its dimensions and hash its local weights file(s)."""
        # Imported here because clip.encoder imports this module.
        from clip.encoder import resolve_spec

        return resolve_spec(backend, model, pretrained)

    @classmethod
    def for_local_open_clip(cls, config_path: str | Path, weights_path: str | Path) -> ClipSpec:
        """Spec of an open_clip CLIP saved as a model-config JSON file plus a weights file."""
        return cls.resolve("open_clip", config_path, weights_path)

    def identity(self) -> dict[str, Any]:
        """The fields that say which CLIP this is; file locations drop out once weights are hashed."""
        data = self.model_dump(mode="json")
        if self.normalise:
            del data["normalise"]  # the default: CLIPs specified before the option keep their fingerprints
        if self.weights_sha256 is not None:
            for name in _PATH_FIELDS:
                if is_local_path(self.backend, name, data[name]):
                    data[name] = None
        return data

    def fingerprint(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def reference(self) -> ClipSpec:
        """The spec as a prior or decoder keeps it: the identity, with its files' locations reduced to
        their names once the weights are hashed (they are the CLIP folder's business)."""
        changes = {name: Path(getattr(self, name)).name or "." for name in _PATH_FIELDS
                   if self.weights_sha256 is not None and is_local_path(self.backend, name, getattr(self, name))}
        return self.override(**changes)

    def save(self, directory: str | Path) -> Path:
        """Write clip_spec.json into `directory`; files inside it are named relative to it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / SPEC_FILE
        path.write_text(self.relative_to(directory).to_json() + "\n")
        return path

    def relative_to(self, directory: Path) -> ClipSpec:
        changes = {}
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if is_local_path(self.backend, name, value) and Path(value).is_absolute():
                inside = _inside(Path(value), directory.resolve())
                if inside is not None:
                    changes[name] = inside
        return self.override(**changes) if changes else self

    @classmethod
    def load(cls, directory: str | Path, own_files: bool = False) -> ClipSpec:
        """The spec in `directory`, its relative file names resolved there. `own_files`: the folder is
        the CLIP's model folder and its files are used, so absolute names (from folders written
        before they were relative) are looked up there too, never outside it."""
        directory = Path(directory)
        path = directory / SPEC_FILE
        try:
            text = path.read_text()
        except OSError as err:
            raise CheckpointError(f"{path}: cannot read CLIP spec ({err.strerror or err})") from None
        try:
            spec = cls.from_json(text)
        except ConfigError as err:
            raise CheckpointError(f"{path}: {err}") from None
        return spec._located_in(directory.resolve(), own_files, path)

    def _located_in(self, directory: Path, own_files: bool, source: Path) -> ClipSpec:
        changes = {}
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if not is_local_path(self.backend, name, value):
                continue
            if not Path(value).is_absolute():
                located = (directory / value).resolve()
                if _inside(located, directory) is None:
                    raise CheckpointError(f"{source}: {name} {value!r} points outside its folder")
                changes[name] = str(located)
            elif own_files and _inside(Path(value), directory) is None:
                changes[name] = str(directory if self.backend == "hf" else directory / Path(value).name)
        return self.override(**changes) if changes else self


def _inside(path: Path, directory: Path) -> str | None:
    """`path` relative to `directory` (posix), or None when it lies outside."""
    try:
        return path.resolve().relative_to(directory).as_posix()
    except ValueError:
        return None


def is_local_path(backend: str, field: str, value: str | None) -> bool:
    """Whether a `model`/`pretrained` value names a file or folder rather than a registry name or tag."""
    if value is None:
        return False
    if backend == "hf" or "/" in value or "\\" in value:
        return True
    suffixes = (".json",) if field == "model" else WEIGHT_SUFFIXES
    return value.endswith(suffixes)


def check_same_clip(expected: ClipSpec, actual: ClipSpec, what: str) -> None:
    """Raise ClipMismatchError if `what` (a component trained with `expected`) would run with another CLIP."""
    if expected.fingerprint() == actual.fingerprint():
        return
    want, got = expected.identity(), actual.identity()
    differing = ", ".join(
        f"{k}: {_short(want.get(k, True))} != {_short(got.get(k, True))}"  # only `normalise` may be absent
        for k in sorted(want | got) if want.get(k, True) != got.get(k, True)
    )
    raise ClipMismatchError(
        f"{what} was trained with CLIP {expected.fingerprint()} but the CLIP in use is "
        f"{actual.fingerprint()} ({differing})"
    )


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def sha256_files(paths: Iterable[Path]) -> str:
    """Content hash of one weights file (equal to `sha256sum FILE`) or of several, by name and content."""
    paths = sorted(paths, key=lambda p: p.name)
    if not paths:
        raise CheckpointError("no weights files to hash")
    digests = [(p.name, _sha256_file(p)) for p in paths]
    if len(digests) == 1:
        return digests[0][1]
    joined = "".join(f"{digest}  {name}\n" for name, digest in digests)
    return hashlib.sha256(joined.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read weights ({err.strerror or err})") from None
    return digest.hexdigest()
