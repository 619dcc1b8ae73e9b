"""Model folders and registry versions are self-contained: a trained cascade's folders, copied
elsewhere, generate after the originals are corrupted and the training folder is deleted; each
CLIP spec names its files relative to its folder, and the CLIP's weights are checked by sha256."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from clip.spec import SPEC_FILE, ClipSpec
from core.errors import CheckpointError
from unclip import UnclipPipeline
from unclip.testing import save_tiny_decoder, save_tiny_prior, save_tiny_upsampler

STAGES = ("clip", "prior", "decoder", "upsampler1", "upsampler2")
STEPS = {"prior": 2, "decoder": 2, "upsampler1": 1, "upsampler2": 1}
TINY_CLIP = ["data.num_examples=48", "data.val_size=16", "eval_size=16", "train.steps=2", "train.batch_size=16",
             "model.image_size=32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cascade laid out the way flows.train leaves it: model folders deep inside runs/."""
    from clip.train import settings_for, train_clip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = tmp_path_factory.mktemp("work") / "runs"
    spec, _ = train_clip(settings_for("smoke", TINY_CLIP), runs / "clip" / "a1b2")
    folders = {"clip": runs / "clip" / "a1b2" / "model"}
    folders["prior"] = save_tiny_prior(runs / "prior" / "c3" / "model", spec)
    folders["decoder"] = save_tiny_decoder(runs / "decoder" / "d4" / "model", spec)
    folders["upsampler1"] = save_tiny_upsampler(runs / "upsampler1" / "e5" / "model", 1, 16, 32)
    folders["upsampler2"] = save_tiny_upsampler(runs / "upsampler2" / "f6" / "model", 2, 32, 64)
    torch.set_num_threads(threads)
    shutil.copytree(folders["clip"], runs.parent / "clip_copy")  # for the tests after runs/ is deleted
    return runs, folders


def test_specs_name_no_file_outside_their_folder(trained):
    _, folders = trained
    for stage in ("clip", "prior", "decoder"):
        stored = json.loads((folders[stage] / SPEC_FILE).read_text())
        assert not any(str(stored[k]).startswith("/") for k in ("model", "pretrained")), (stage, stored)
    clip = ClipSpec.load(folders["clip"], own_files=True)
    assert clip.model == str(folders["clip"].resolve() / "open_clip_config.json")


def test_copies_generate_after_the_originals_are_corrupted_and_deleted(trained, tmp_path, monkeypatch):
    runs, folders = trained
    monkeypatch.setenv("UNCLIP_MLFLOW_DIR", str(tmp_path / "mlruns"))
    copies = tmp_path / "copies"
    for stage in STAGES:
        shutil.copytree(folders[stage], copies / stage)
    register(folders)  # the registry keeps copies of its own
    for weights in runs.rglob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:100])
    generate_from(copies)  # the damaged originals are still there, and not read
    shutil.rmtree(runs)
    generate_from(copies)


def generate_from(copies) -> None:
    for pipe in (UnclipPipeline.from_models_dir(copies, progress=False),
                 UnclipPipeline.from_registry("champion", progress=False)):
        image = pipe.generate("a red circle", seed=1, steps=STEPS, decoder_best_of=1)[0]
        assert image.size == (64, 64)


def test_a_damaged_clip_is_refused_by_its_sha256(trained, tmp_path):
    runs, _ = trained
    copy = shutil.copytree(runs.parent / "clip_copy", tmp_path / "clip")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, still a readable file: only the hash can tell
    weights.write_bytes(bytes(data))
    from clip.encoder import load_encoder

    with pytest.raises(CheckpointError, match="sha256"):
        load_encoder(ClipSpec.load(copy, own_files=True))


def register(folders) -> None:
    from core import registry, tracking
    from unclip.sources import REGISTERED_NAMES

    for stage in STAGES:
        with tracking.start_run(f"unclip-{stage}", run_name=stage) as tracker:
            registry.register_model(tracker, folders[stage], REGISTERED_NAMES[stage], "score", 1.0)
