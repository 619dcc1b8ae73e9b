import shutil
from pathlib import Path

import pytest
from tiny_clips import make_open_clip, shared_hf_clip, shared_open_clip

from clip.encoder import resolve_spec
from clip.spec import SPEC_FILE, ClipSpec, check_same_clip
from core.errors import CheckpointError, ClipMismatchError, ConfigError

SHA_A = "a" * 64
SHA_B = "b" * 64


def spec(**changes) -> ClipSpec:
    base = {
        "backend": "open_clip",
        "model": "/models/tiny.json",
        "pretrained": "/models/tiny.safetensors",
        "weights_sha256": SHA_A,
        "embed_dim": 32,
        "image_size": 32,
        "context_length": 16,
        "text_width": 32,
    }
    return ClipSpec.parse({**base, **changes})


@pytest.fixture(scope="session")
def open_clip_spec(tmp_path_factory):
    return shared_open_clip(tmp_path_factory)


@pytest.fixture(scope="session")
def hf_spec(tmp_path_factory):
    return shared_hf_clip(tmp_path_factory)


def test_fingerprint_ignores_paths_once_weights_are_hashed():
    moved = spec(model="/elsewhere/tiny.json", pretrained="/elsewhere/tiny.safetensors")
    assert moved.fingerprint() == spec().fingerprint()
    assert spec(weights_sha256=SHA_B).fingerprint() != spec().fingerprint()
    assert spec(embed_dim=64).fingerprint() != spec().fingerprint()


def test_fingerprint_keeps_names_and_unhashed_paths():
    named = spec(model="ViT-B-32", pretrained="/a/w.safetensors")
    assert named.fingerprint() != spec(model="ViT-B-16", pretrained="/a/w.safetensors").fingerprint()
    assert named.identity()["pretrained"] is None
    unhashed = spec(weights_sha256=None)
    assert unhashed.fingerprint() != spec(weights_sha256=None, pretrained="/b/w.safetensors").fingerprint()
    tagged = spec(model="ViT-B-32", pretrained="openai", weights_sha256=None)
    assert tagged.fingerprint() != tagged.override(pretrained="laion2b_s34b_b79k").fingerprint()


def test_fingerprint_is_stable_across_save_and_load(tmp_path):
    original = spec()
    original.save(tmp_path)
    loaded = ClipSpec.load(tmp_path)
    assert loaded == original
    assert loaded.fingerprint() == original.fingerprint() == spec().fingerprint()


def test_spec_validation():
    with pytest.raises(ConfigError, match="pretrained"):
        spec(backend="hf", model="/models/hf", pretrained="/models/w.safetensors")
    with pytest.raises(ConfigError, match="embed_dim"):
        spec(embed_dim=0)
    with pytest.raises(ConfigError, match="weights_sha256"):
        spec(weights_sha256="not-a-hash")
    with pytest.raises(ConfigError, match="colour"):
        spec(colour="red")


def test_check_same_clip_names_component_fingerprints_and_fields():
    check_same_clip(spec(), spec(model="/moved/tiny.json"), "prior")
    with pytest.raises(ClipMismatchError) as caught:
        check_same_clip(spec(), spec(weights_sha256=SHA_B, embed_dim=64), "decoder")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"decoder was trained with CLIP {spec().fingerprint()}")
    assert spec(weights_sha256=SHA_B, embed_dim=64).fingerprint() in message
    assert "embed_dim: 32 != 64" in message
    assert "weights_sha256: aaaaaaaaaaaa… != bbbbbbbbbbbb…" in message
    assert "context_length" not in message


def test_load_reports_missing_and_invalid_files(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / SPEC_FILE)):
        ClipSpec.load(tmp_path)
    (tmp_path / SPEC_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ClipSpec.load(tmp_path)
    (tmp_path / SPEC_FILE).write_text('{"backend": "open_clip"}')
    with pytest.raises(CheckpointError, match="embed_dim"):
        ClipSpec.load(tmp_path)


@pytest.mark.parametrize("kind", ["open_clip", "hf"])
def test_resolved_fingerprint_survives_moving_the_folder(kind, open_clip_spec, hf_spec, tmp_path):
    original = open_clip_spec if kind == "open_clip" else hf_spec
    if kind == "open_clip":
        moved_dir = shutil.copytree(Path(original.model).parent, tmp_path / "moved")
        moved = resolve_spec(
            kind, moved_dir / "tiny-open-clip.json", moved_dir / "tiny-open-clip.safetensors"
        )
    else:
        moved = resolve_spec(kind, shutil.copytree(original.model, tmp_path / "moved"))
    assert moved.model != original.model
    assert moved.fingerprint() == original.fingerprint()
    assert moved.identity() == original.identity()


def test_resolved_fingerprint_changes_with_the_weights(open_clip_spec, tmp_path):
    other = make_open_clip(tmp_path, seed=1)
    assert other.weights_sha256 != open_clip_spec.weights_sha256
    assert other.fingerprint() != open_clip_spec.fingerprint()
    assert other.model_dump(exclude={"model", "pretrained", "weights_sha256"}) == open_clip_spec.model_dump(
        exclude={"model", "pretrained", "weights_sha256"}
    )
