"""Fine-tuning a converted Karlo cascade through `flows.train --init-from`: the tiny diffusers pipeline of
tests/karlo_tiny.py converted and registered, its prior, decoder and upsampler trained a few steps from
those weights and registered behind the gate against their parents; a parent of another CLIP and bad
references are refused in one line."""

from __future__ import annotations

import pytest
from karlo_tiny import save_tiny_image_encoder, save_tiny_karlo
from mlflow.tracking import MlflowClient

from core import registry

# A Prefect test harness, a conversion with registration and three stages trained: ~45 s on 2 cores.
pytestmark = pytest.mark.slow

FEW = ["clip.data.num_examples=80", "clip.data.val_size=16", "prior.train.steps=2", "decoder.train.steps=2",
       "decoder.eval.size=4", "decoder.eval.invert_size=2", "decoder.eval.grid=0", "upsampler1.train.steps=2",
       "upsampler1.eval_size=1"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    mp = pytest.MonkeyPatch()
    mp.setenv("UNCLIP_MLFLOW_DIR", str(tmp_path_factory.mktemp("mlruns")))
    with prefect_test_harness(server_startup_timeout=90), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield tmp_path_factory.mktemp("work")
    mp.undo()


@pytest.fixture(scope="module")
def converted(harness):
    from unclip.convert.__main__ import main as convert

    pipeline = save_tiny_karlo(harness / "karlo")
    vision = save_tiny_image_encoder(harness / "image_encoder")
    models = harness / "models"
    assert convert(["from-diffusers", str(pipeline), "--out", str(models), "--image-encoder", str(vision),
                    "--register"]) == 0
    return models


@pytest.fixture(scope="module")
def tuned(harness, converted):
    from flows.train import train_cascade

    parents = ["decoder=models:/unclip-decoder@champion", str(converted / "prior"), f"upsampler1={converted}"]
    return train_cascade("smoke", FEW, str(harness / "runs"), stages=["prior", "decoder", "upsampler1"],
                         init_from=parents)


def test_conversion_registers_every_stage(converted):
    models = registry.registered_models()
    for name in ("unclip-clip", "unclip-prior", "unclip-decoder", "unclip-upsampler-1"):
        assert "champion" in models[name], name


def test_each_stage_trains_from_its_parent_and_is_gated_against_it(tuned, converted):
    client = MlflowClient()
    for stage, parent in (("decoder", "models:/unclip-decoder/1"), ("prior", str((converted / "prior").resolve())),
                          ("upsampler1", str((converted / "upsampler1").resolve()))):
        result = tuned[stage]
        assert not result.skipped and result.version == "2", stage
        run = client.get_run(result.run_id)
        assert run.data.tags["parent"] == parent and run.data.tags["gate.against"] == "parent", stage
        assert any(k.startswith("parent.") for k in result.metrics), stage
    decoder_cfg = (tuned["decoder"].folder / "decoder_config.json").read_text()
    assert decoder_cfg == (converted / "decoder" / "decoder_config.json").read_text()  # the parent's layout


def test_the_fine_tuned_cascade_generates(tuned, converted):
    import shutil

    from unclip import UnclipPipeline

    models = converted.parent / "tuned"
    shutil.copytree(converted / "clip", models / "clip")
    for stage in ("prior", "decoder", "upsampler1"):
        shutil.copytree(tuned[stage].folder, models / stage)
    images = UnclipPipeline.from_models_dir(models, progress=False).generate(
        "a red circle", steps={"prior": 2, "decoder": 2, "upsampler1": 2})
    assert images[0].size == (64, 64)


def test_a_parent_of_another_clip_is_refused(harness, converted, tmp_path, capsys):
    from tiny_clips import make_open_clip

    from flows.train import main
    from unclip.testing import build_tiny_models

    other = build_tiny_models(tmp_path / "other", make_open_clip, upsamplers=0)
    argv = ["--preset", "smoke", "--workdir", str(harness / "runs"), "--stage", "decoder", "--init-from",
            f"decoder={other / 'decoder'}"] + [f"--set={s}" for s in FEW]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained with CLIP" in err[0]


@pytest.mark.parametrize("ref, message", [
    ("clip=models:/unclip-clip@champion", "the CLIP cannot start from existing weights"),
    ("decoder=models:/unclip-prior@champion", "is the prior's model, not the decoder's"),
    ("models:/unclip-decoder@nope", "no version or alias 'nope'"),
    ("decoder=/no/such/folder", "is not a folder"),
    ("models:unclip-decoder", "write a registered model as models:/NAME@ALIAS"),
])
def test_bad_references_are_one_error_line(harness, converted, ref, message, capsys):
    from flows.train import main

    assert main(["--preset", "smoke", "--stage", "decoder", "--init-from", ref]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
