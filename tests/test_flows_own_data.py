"""The path a user takes with their own images: `flows.train --data folder:DIR` end to end (every stage
trains on the folder, gates on a generic metric and registers; a re-run skips every stage; generation
loads the models by alias), and the same with a pretrained CLIP (`--clip`) of either backend."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tiny_clips import make_hf_clip, make_open_clip

from core import registry
from data.testing import cases, write_folder
from flows.train import GATES, MODEL_NAMES

TINY = ["clip.eval_size=16", "clip.train.steps=3", "clip.train.batch_size=8", "prior.train.steps=3",
        "prior.train.batch_size=8", "prior.eval.size=8", "decoder.train.steps=3", "decoder.draft.steps=3",
        "upsampler1.train.steps=2", "upsampler2.train.steps=2", "data.val_fraction=0.25"]
WORDS = ["red", "green", "blue", "yellow", "purple", "orange"]


def write_own_data(root) -> int:
    """A folder of 60 photo-like images of mixed sizes and modes with captions.tsv, plus the bad cases
    of data.testing (corrupt, truncated, tiny, uncaptioned, ...) under bad/. Returns the good count."""
    rng = np.random.default_rng(0)
    lines = ["file\tcaption"]
    for i in range(60):
        w, h = int(rng.integers(40, 140)), int(rng.integers(40, 140))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (i * 40) % 256
        image = Image.fromarray(pixels)
        mode, ext = [("RGB", "jpg"), ("L", "png"), ("RGBA", "png"), ("P", "gif")][i % 4]
        image.convert(mode).save(root / f"img{i:03d}.{ext}")
        lines.append(f"img{i:03d}.{ext}\ta {WORDS[i % 6]} square on a {WORDS[(i // 6) % 6]} photo number {i}")
    (root / "captions.tsv").write_text("\n".join(lines) + "\n")
    write_folder(root, cases(), captions="txt", subfolder="bad")
    return 60


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    store = tmp_path_factory.mktemp("mlruns")
    mp = pytest.MonkeyPatch()
    mp.setenv("UNCLIP_MLFLOW_DIR", str(store))
    with prefect_test_harness(server_startup_timeout=90), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield tmp_path_factory.mktemp("work")
    mp.undo()


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_data")
    write_own_data(root)
    return root


@pytest.fixture(scope="module")
def cascade(harness, own_data):
    from flows.train import train_cascade

    return train_cascade("smoke", TINY, str(harness / "runs"), data=f"folder:{own_data}")


def test_every_stage_trains_on_the_folder_gates_generically_and_registers(cascade):
    models = registry.registered_models()
    for stage, result in cascade.items():
        assert "champion" in models[MODEL_NAMES[stage]], stage
        assert GATES[stage] in result.metrics, stage
        assert not result.skipped
    assert "zeroshot_min" not in cascade["clip"].metrics  # no shapes probe on these captions
    assert {"i2t_top5", "t2i_top5"} <= set(cascade["clip"].metrics)
    assert {"caption_top5", "kid", "kid_real_split", "clip_score_real"} <= set(cascade["decoder"].metrics)


def test_bad_files_are_counted_in_every_image_stage(cascade):
    for stage in ("clip", "prior", "decoder", "upsampler1"):
        metrics = cascade[stage].metrics
        assert metrics["data.skipped"] >= 1, stage
        assert any(k.startswith("data.skipped.corrupt_image") or k.startswith("data.skipped.truncated_image")
                   for k in metrics), stage
        assert any(k.startswith("data.converted.") for k in metrics), stage


def test_a_rerun_skips_every_stage(harness, own_data, cascade):
    from flows.train import train_cascade

    again = train_cascade("smoke", TINY, str(harness / "runs"), data=f"folder:{own_data}")
    assert all(r.skipped for r in again.values())
    assert {k: r.version for k, r in again.items()} == {k: r.version for k, r in cascade.items()}


def test_generation_loads_the_folder_models_by_alias(cascade, tmp_path):
    from flows.generate import main
    from flows.presets import cascade_settings

    code = main(["--prompt", "a red square on a blue photo", "--num-images", "2", "--steps",
                 "prior=2,decoder=2,upsampler1=1,upsampler2=1", "--out", str(tmp_path), "--no-mlflow", "--quiet",
                 "--decoder-best-of", "1"])
    assert code == 0
    side = cascade_settings("smoke").upsampler2.upsampler.high_res
    with Image.open(tmp_path / "generate-001.png") as image:
        assert image.size == (side, side)


@pytest.mark.parametrize("backend", ["open_clip", "hf"])
def test_a_pretrained_clip_is_registered_frozen_and_the_rest_trains_against_it(harness, own_data, tmp_path, backend):
    from clip.encoder import load_encoder
    from clip.spec import ClipSpec
    from flows.train import train_cascade
    from unclip import UnclipPipeline

    if backend == "open_clip":
        spec = make_open_clip(tmp_path / "clip")
        ref = f"open_clip:{spec.model}:{spec.pretrained}"
    else:
        spec = make_hf_clip(tmp_path / "clip")
        ref = f"hf:{spec.model}"
    results = train_cascade("smoke", TINY, str(harness / f"runs-{backend}"), stages=["clip", "prior", "decoder"],
                            data=f"folder:{own_data}", clip=ref)
    clip = results["clip"]
    assert not clip.skipped and "retrieval_top1" in clip.metrics
    copied = ClipSpec.load(clip.folder)
    assert copied.fingerprint() == spec.fingerprint(), "the registered CLIP is the one given"
    assert str(clip.folder.resolve()) in str(copied.model), "its files were copied into its model folder"
    for stage in ("prior", "decoder"):
        assert ClipSpec.load(results[stage].folder).fingerprint() == spec.fingerprint(), stage
    load_encoder(copied)
    pipe = UnclipPipeline.from_folders(clip.folder, results["prior"].folder, results["decoder"].folder,
                                       progress=False)
    image = pipe.generate("a red square", steps={"prior": 2, "decoder": 2}, decoder_best_of=1)[0]
    assert image.size == (16, 16)
    again = train_cascade("smoke", TINY, str(harness / f"runs-{backend}"), stages=["clip", "prior"],
                          data=f"folder:{own_data}", clip=ref)
    assert again["clip"].skipped and again["prior"].skipped
