"""The inference command lines end to end on tiny models: Prefect flows, PNGs with provenance, grids,
MLflow logging, the registry, `--help`, and one-line errors with exit status 2."""

from __future__ import annotations

import argparse

import pytest
import torch
from PIL import Image
from tiny_clips import make_open_clip

from flows import generate, interpolate, text_diff, variations
from unclip.provenance import read_png_metadata
from unclip.testing import save_tiny_prior, shared_tiny_models

FAST = "prior=2,decoder=2,upsampler1=1,upsampler2=1"


@pytest.fixture(scope="module", autouse=True)
def environment(tmp_path_factory):
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNCLIP_MLFLOW_DIR", str(tmp_path_factory.mktemp("cli_mlruns")))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        with prefect_test_harness(server_startup_timeout=None), \
                temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return shared_tiny_models(tmp_path_factory, make_open_clip)


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("pictures") / "red.png"
    image = Image.new("RGB", (16, 16), (230, 230, 230))
    image.paste((200, 20, 20), (4, 4, 12, 12))
    image.save(path)
    return path


def run(main, argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as done:  # argparse: --help, and options out of range
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def output_paths(out: str) -> tuple[list[str], str]:
    lines = out.strip().splitlines()
    images = [line for line in lines if line.endswith(".png") and not line.startswith("grid: ")]
    grid = next(line.removeprefix("grid: ") for line in lines if line.startswith("grid: "))
    return images, grid


def test_empty_registry_lists_what_exists_and_how_to_train(capsys):
    """Runs first, while the module's MLflow store is still empty."""
    code, _, err = run(generate.main, ["--prompt", "x", "--no-mlflow"], capsys)
    assert code == 2
    assert "no registered model 'unclip-clip'" in err and "registered: none" in err and "flows.train" in err


def test_generate_from_the_registry_logs_to_mlflow(models, tmp_path, capsys):
    """The upsamplers are not registered: the registry cascade ends at the decoder."""
    register_all(models, ("clip", "prior", "decoder"))
    code, out, err = run(generate.main, ["--prompt", "a red circle", "--prompt", "a blue square", "--num-images", 2,
                                         "--seed", 7, "--steps", "prior=2,decoder=2", "--guidance", "prior=1,decoder=3",
                                         "--decoder-best-of", 2,
                                         "--version", "prior=1", "--out", tmp_path, "--quiet"], capsys)
    assert code == 0, err
    images, grid = output_paths(out)
    assert len(images) == 4 and all(Image.open(p).size == (16, 16) for p in images)
    meta = read_png_metadata(images[3])
    assert meta["prompt"] == "a blue square" and meta["seed"] == 10
    assert meta["guidance"] == {"prior": 1.0, "decoder": 3.0}
    assert meta["steps"] == {"prior": 2, "decoder": 2} and "upsampler1" not in meta["models"]
    assert meta["models"]["prior"] == {"name": "unclip-prior", "version": "1", "folder": meta["models"]["prior"]["folder"]}
    assert len(meta["clip_fingerprint"]) == 16 and meta["task"] == "generate" and meta["decoder_best_of"] == 2
    assert Image.open(grid).size[0] >= 32
    run_id = out.split("mlflow run: ")[1].split()[0]
    from mlflow.tracking import MlflowClient  # the test may look into the store; the code may not

    from core import tracking
    tracking.configure()
    logged = [a.path for a in MlflowClient().list_artifacts(run_id, "images")]
    assert len(logged) == 5 and "images/generate-grid.png" in logged


def test_variations_cli(models, picture, tmp_path, capsys):
    code, out, err = run(variations.main, ["--image", picture, "-n", 2, "--eta", 0.5, "--steps", "decoder=3",
                                           "--output-size", 32, "--models", models, "--out", tmp_path,
                                           "--no-mlflow", "--quiet"], capsys)
    assert code == 0, err
    images, grid = output_paths(out)
    assert len(images) == 2 and Image.open(images[0]).size == (32, 32)
    meta = read_png_metadata(images[1])
    assert meta["task"] == "variations" and meta["eta"] == 0.5 and meta["seed"] == 1
    assert meta["source"] == str(picture) and meta["guidance"]["decoder"] == 1.0


def test_interpolate_cli(models, picture, tmp_path, capsys):
    other = tmp_path / "blue.png"
    Image.new("RGB", (24, 24), (20, 20, 200)).save(other)
    code, out, err = run(interpolate.main, ["--image-a", picture, "--image-b", other, "--steps", 3,
                                            "--sample-steps", "decoder=3", "--noise", "fixed", "--output-size", 16,
                                            "--models", models, "--out", tmp_path / "out", "--no-mlflow"], capsys)
    assert code == 0, err
    images, _ = output_paths(out)
    assert [read_png_metadata(p)["theta"] for p in images] == [0.0, 0.5, 1.0]
    assert read_png_metadata(images[0])["noise"] == "fixed"


def test_text_diff_cli(models, picture, tmp_path, capsys):
    code, out, err = run(text_diff.main, ["--image", picture, "--from", "a red square", "--to", "a blue square",
                                          "--thetas", "0,0.25,0.5", "--steps", "decoder=2", "--output-size", 16,
                                          "--best-of", 2, "--models", models, "--out", tmp_path, "--no-mlflow",
                                          "--quiet"], capsys)
    assert code == 0, err
    images, grid = output_paths(out)
    meta = read_png_metadata(images[2])
    assert meta["theta"] == 0.5 and meta["from_caption"] == "a red square" and meta["to_caption"] == "a blue square"
    assert meta["best_of"] == 2 and meta["candidate"] in (0, 1) and read_png_metadata(images[0])["candidate"] == 0
    assert read_png_metadata(grid)["images"] == [f"text_diff-00{i}.png" for i in range(3)]
    code, out, err = run(text_diff.main, ["--image", picture, "--from", "a red square", "--to", "a blue square",
                                          "--direction", "prior", "--draws", 2, "--thetas", "0,1.5", "--caption", "none",
                                          "--steps", "prior=2,decoder=2", "--output-size", 16, "--models", models,
                                          "--out", tmp_path / "prior", "--no-mlflow", "--quiet"], capsys)
    assert code == 0, err
    images, _ = output_paths(out)
    assert [read_png_metadata(p)["theta"] for p in images] == [0.0, 1.5]
    assert read_png_metadata(images[1])["direction"] == "prior" and read_png_metadata(images[1])["caption"] == "none"


@pytest.mark.parametrize("module", [generate, variations, interpolate, text_diff])
def test_help_documents_every_option(module, capsys):
    parser = module.build_parser()
    undocumented = [a.option_strings for a in parser._actions
                    if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not undocumented
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--models" in text and "--out" in text and "python -m flows." in text


def test_user_errors_are_one_line(models, picture, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    import shutil

    shutil.copytree(models, mixed)
    save_tiny_prior(mixed / "prior", make_open_clip(tmp_path / "other", seed=3))
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    base = ["--models", models, "--out", tmp_path / "o", "--no-mlflow"]
    cases = [
        (generate.main, ["--prompt", "  ", *base], "prompt is empty"),
        (generate.main, ["--prompt", "x", "--models", tmp_path / "none", "--no-mlflow"], "does not exist.*flows.train"),
        (generate.main, ["--prompt", "x", "--models", mixed, "--no-mlflow"], "trained with CLIP"),
        (generate.main, ["--prompt", "x", "--output-size", 48, *base], "output size 48 is impossible"),
        (generate.main, ["--prompt", "x", "--steps", "decoder=5000", *base], "between 1 and 50"),
        (generate.main, ["--prompt", "x", "--steps", "decodr=5", *base], "unknown stage 'decodr'"),
        (generate.main, ["--prompt", "x", "--num-images", 0, *base], "--num-images: must be between 1"),
        (generate.main, ["--prompt", "x", "--decoder-best-of", 0, *base], "--decoder-best-of: must be between 1"),
        (generate.main, ["--prompt", "x", "--models", "registry", "--ref", "nightly", "--no-mlflow"],
         "no version or alias 'nightly'|no registered model 'unclip-clip'"),
        (variations.main, ["--image", tmp_path / "missing.png", *base], "does not exist"),
        (variations.main, ["--image", not_image, *base], "not an image"),
        (variations.main, ["--image", picture, "--eta", 3, *base], "eta"),
        (interpolate.main, ["--image-a", picture, "--image-b", picture, "--steps", 1, *base], "between 2"),
        (text_diff.main, ["--image", picture, "--from", "", "--to", "b", *base], "from caption is empty"),
        (text_diff.main, ["--image", picture, "--from", "a", "--to", "b", "--thetas", "0,x", *base], "thetas"),
        (text_diff.main, ["--image", picture, "--from", "a", "--to", "b", "--thetas", "1.5", *base], r"\[0, 1\]"),
        (text_diff.main, ["--image", picture, "--from", "a", "--to", "b", "--direction", "prior", "--draws", 0, *base],
         "--draws: must be between 1"),
        (text_diff.main, ["--image", picture, "--from", "a", "--to", "b", "--best-of", 0, *base],
         "--best-of: must be between 1"),
        (text_diff.main, ["--image", picture, "--from", "a", "--to", "b", "--best-of-eta", 0, *base],
         r"--best-of-eta must lie in \(0, 1\]"),
        (text_diff.main, ["--image", picture, "--from", "a", "--to", "b", "--guidance", "decoder=2", *base],
         "caption blending decodes unguided"),
    ]
    import re

    for main, argv, pattern in cases:
        code, out, err = run(main, argv, capsys)
        last = err.strip().splitlines()[-1] if err.strip() else ""
        assert code == 2, (argv, out, err)
        assert last.startswith("error: ") and re.search(pattern, last), (pattern, err)
        assert "Traceback" not in err


def register_all(models, stages):
    """Register tiny stage folders the way flows.train does (one MLflow run each)."""
    from core import registry, tracking
    from unclip.sources import REGISTERED_NAMES

    for stage in stages:
        name = REGISTERED_NAMES[stage]
        with tracking.start_run(f"unclip-{stage}", run_name=stage) as tracker:
            registry.register_model(tracker, models / stage, name, "score", 1.0)
