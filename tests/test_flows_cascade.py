"""`flows.train --preset smoke` end to end under a Prefect test harness and a private MLflow store:
every stage registered, re-runs skip finished stages, generation and the pyfunc load by alias."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from clip.spec import ClipSpec
from core import registry
from flows.train import MODEL_NAMES

TINY = ["clip.data.num_examples=160", "clip.data.val_size=32", "clip.eval_size=32", "clip.train.steps=4",
        "prior.train.steps=4", "decoder.train.steps=4", "upsampler1.train.steps=2", "upsampler2.train.steps=2"]


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
def first_part(harness):
    """An interrupted cascade: only the first two stages finished."""
    from flows.train import train_cascade

    return train_cascade("smoke", TINY, str(harness), stages=["clip", "prior"])


@pytest.fixture(scope="module")
def cascade(harness, first_part):
    from flows.train import train_cascade

    return train_cascade("smoke", TINY, str(harness))


def test_every_stage_is_registered_as_champion(cascade):
    models = registry.registered_models()
    for stage, name in MODEL_NAMES.items():
        assert "champion" in models[name], stage
        assert cascade[stage].folder.is_dir()


def test_rerun_resumes_where_it_stopped(first_part, cascade):
    assert not first_part["clip"].skipped and not first_part["prior"].skipped
    assert cascade["clip"].skipped and cascade["prior"].skipped
    assert first_part["clip"].seconds > 0 and cascade["decoder"].seconds > 0  # timed where trained
    assert cascade["clip"].seconds == 0
    assert not cascade["decoder"].skipped and not cascade["upsampler2"].skipped


def test_a_full_rerun_skips_everything(harness, cascade):
    from flows.train import train_cascade

    again = train_cascade("smoke", TINY, str(harness))
    assert all(r.skipped for r in again.values())
    assert {k: r.version for k, r in again.items()} == {k: r.version for k, r in cascade.items()}


def test_changed_settings_retrain_in_a_fresh_folder(harness, cascade):
    """A stage whose settings changed starts afresh, not from the old run's checkpoints (which a
    different configuration cannot resume), and the old run's folder stays as it was."""
    from flows.train import train_cascade

    before = cascade["upsampler2"]
    again = train_cascade("smoke", TINY + ["upsampler2.upsampler.sample_steps=2"], str(harness), stages=["upsampler2"])
    after = again["upsampler2"]
    assert not after.skipped and after.version != before.version
    assert after.folder.parent != before.folder.parent and before.folder.is_dir()


def test_generation_loads_every_part_by_alias(cascade):
    from unclip import UnclipPipeline

    pipe = UnclipPipeline.from_registry("champion", progress=False)
    images = pipe.generate("a small red circle in the center on a blue background", num_images=2, seed=3,
                           steps={"prior": 3, "decoder": 3, "upsampler1": 2, "upsampler2": 2})
    assert len(images) == 2 and images[0].size == (pipe.sizes[-1],) * 2


def test_pipeline_pyfunc_loads_and_predicts(cascade):
    """flows.train registered the champions as unclip-pipeline, once per set of champions."""
    import pandas as pd

    from unclip.serving import PIPELINE_MODEL, load_pipeline, register_champions

    assert "champion" in registry.registered_models()[PIPELINE_MODEL]
    assert register_champions() == register_champions()  # nothing new to register
    model = load_pipeline("champion")
    out = model.predict(pd.DataFrame({"prompt": ["a large blue square at the top on a white background"],
                                      "seed": [1], "steps": ["prior=2,decoder=2,upsampler1=2,upsampler2=2"]}))
    image = Image.open(io.BytesIO(base64.b64decode(out["image_png_base64"][0])))
    assert image.format == "PNG" and image.size[0] >= 16


def test_demo_scores_generates_and_manipulates(harness, cascade):
    from flows.demo import demo_flow
    from flows.presets import cascade_settings

    out = harness / "demo-out"
    summary = demo_flow("smoke", str(harness), str(out), prompts=4, overrides=TINY, score_prompts=6)
    assert all(model.endswith("(reused)") for model in summary["models"].values())  # trained above
    for name in ("heldout", "train_captions"):
        figures = summary["generated"][name]
        assert {"clip_score", "clip_score_real", "caption_top5", "caption_real_top5", "kid"} <= set(figures), name
        assert {"cascade_clip.clip_score", "cascade_clip.caption_top5"} <= set(figures), "the cascade CLIP's reading"
        assert {"zeroshot_color", "zeroshot_min", "zeroshot_real_shape"} <= set(figures), "the shapes probe"
        assert 0 <= figures["caption_top1"] <= figures["caption_top5"] <= 1
        assert Path(summary["contact_sheets"][name]).is_file()
    assert summary["judge_clip"] != ClipSpec.load(cascade["clip"].folder).fingerprint(), "read by a CLIP of its own"
    assert set(summary["timings_s"]) == {"train", "judge", "generate", "score", "manipulations", "total"}
    assert len(list((out / "heldout_scored").glob("generate-*.png"))) == 6 + 1  # the scored ones and their grid
    assert summary["stage_seconds"] == dict.fromkeys(MODEL_NAMES, 0.0)  # every stage reused: no training time
    sizes = cascade_settings("smoke", TINY)
    with Image.open(out / "heldout" / "generate-000.png") as full, \
            Image.open(out / "train_captions" / "generate-000.png") as scored, \
            Image.open(summary["contact_sheets"]["heldout"]) as sheet:
        assert full.size == (sizes.upsampler2.upsampler.high_res,) * 2
        assert scored.size == (sizes.upsampler1.upsampler.high_res,) * 2
        assert sheet.width > 8 * full.width  # 4 pairs of generated and real side by side
    assert set(summary["grids"]) == {"heldout", "train_captions", "variations", "interpolate", "text_diff"}
    assert all(Path(grid).is_file() for grid in summary["grids"].values())
    assert json.loads((out / "demo_summary.json").read_text())["generated"] == summary["generated"]


def test_demo_refuses_too_few_prompts(harness):
    from core.errors import ConfigError
    from flows.demo import demo_flow

    with pytest.raises(ConfigError, match="at least 2 prompts"):
        demo_flow.fn("smoke", str(harness), str(harness / "x"), prompts=1)
