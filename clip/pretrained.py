"""A pretrained CLIP for the cascade: which one `--clip` names, and a model folder that holds all of it.

    hf:/models/clip-vit-b32            a transformers CLIPModel folder (save_pretrained); a bare folder
                                       with a config.json is read the same way
    open_clip:ViT-B-32:/w/vit.pt       an open_clip model (registered name or model-config .json) and
                                       its weights (a local file, or a tag where the hub can be reached)
    /runs/clip/model                   a folder with a clip_spec.json (e.g. a CLIP this project trained)
    models:/unclip-clip@champion       a registered CLIP (alias or /version)

The folder it is copied into is enough to load it: the weights and configs are copied beside the
ClipSpec, whose sha256 pins them, so the registered model never depends on files elsewhere.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from clip.encoder import resolve_spec
from clip.spec import SPEC_FILE, ClipSpec, is_local_path
from core.errors import ConfigError

REGISTRY_PREFIX = "models:/"
OPEN_CLIP_CONFIG = "open_clip_config.json"


@dataclass(frozen=True)
class ClipRef:
    """What `--clip` names: a registered model (`name`, `ref`) or a spec to copy into the cascade."""

    text: str
    spec: ClipSpec | None = None
    name: str | None = None
    ref: str | None = None

    @property
    def registered(self) -> bool:
        return self.name is not None


def parse_registry_ref(text: str) -> tuple[str, str]:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` → (name, alias or version)."""
    body = text[len(REGISTRY_PREFIX):]
    name, sep, ref = body.partition("@") if "@" in body else body.partition("/")
    if not name or not sep or not ref:
        raise ConfigError(f"{text!r}: a registry reference is models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, ref


def parse_clip_ref(text: str) -> ClipRef:
    """Read a `--clip` value; local CLIPs are loaded once to read their dimensions and hash their weights."""
    if text.startswith(REGISTRY_PREFIX):
        name, ref = parse_registry_ref(text)
        return ClipRef(text, name=name, ref=ref)
    backend, sep, rest = text.partition(":")
    if sep and backend == "hf":
        return ClipRef(text, resolve_spec("hf", _existing(rest, text)))
    if sep and backend == "open_clip":
        model, _, pretrained = rest.partition(":")
        if not model:
            raise ConfigError(f"--clip {text!r}: give open_clip:MODEL[:WEIGHTS]")
        if is_local_path("open_clip", "model", model):
            model = str(_existing(model, text))
        return ClipRef(text, resolve_spec("open_clip", model, pretrained or None))
    path = Path(text).expanduser()
    if (path / SPEC_FILE).is_file():
        return ClipRef(text, ClipSpec.load(path, own_files=True))
    if (path / "config.json").is_file():
        return ClipRef(text, resolve_spec("hf", path))
    raise ConfigError(f"--clip {text!r} is none of: hf:FOLDER, open_clip:MODEL[:WEIGHTS], a CLIP model folder "
                      "(with clip_spec.json), a transformers CLIPModel folder, models:/NAME@ALIAS")


def _existing(path: str, text: str) -> Path:
    found = Path(path).expanduser()
    if not found.exists():
        raise ConfigError(f"--clip {text!r}: {found} does not exist")
    return found.resolve()


def copy_clip(spec: ClipSpec, folder: str | Path) -> ClipSpec:
    """Copy the CLIP `spec` loads into `folder` and write its spec there; the copy is the same CLIP
    (the weights' sha256 is checked), only its files live in the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if spec.backend == "hf":
        shutil.copytree(spec.model, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(SPEC_FILE, ".*"))
        copied = resolve_spec("hf", folder)
    else:
        copied = resolve_spec("open_clip", _copy_open_clip_config(spec.model, folder),
                              _copy_weights(spec.pretrained, folder))
    if spec.weights_sha256 is not None and copied.weights_sha256 != spec.weights_sha256:
        raise ConfigError(f"the CLIP copied into {folder} does not match its source (weights changed while copying?)")
    copied = copied.override(normalise=spec.normalise)  # raw embeddings (Karlo's) are part of which CLIP it is
    copied.save(folder)
    return copied


def _copy_open_clip_config(model: str, folder: Path) -> str:
    """The model config as a JSON file in the folder (a registered name's config is written out)."""
    if is_local_path("open_clip", "model", model):
        config = json.loads(Path(model).read_text())
    else:
        import open_clip

        config = open_clip.get_model_config(model)
        if config is None:
            raise ConfigError(f"unknown open_clip model {model!r}")
    target = folder / OPEN_CLIP_CONFIG
    target.write_text(json.dumps(config, indent=2) + "\n")
    return str(target)


def _copy_weights(pretrained: str | None, folder: Path) -> str | None:
    if pretrained is None or not is_local_path("open_clip", "pretrained", pretrained):
        return pretrained  # a tag: open_clip fetches it where the hub can be reached
    source = Path(pretrained)
    target = folder / source.name
    if source.resolve() != target.resolve():
        shutil.copy2(source, target)
    return str(target)
