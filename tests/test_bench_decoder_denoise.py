"""bench/bench_decoder_denoise.py reads a decoder's draft, one-step estimates and draft-started decodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from bench_script import load_bench
from tiny_clips import make_shape_shards, shared_open_clip

from decoder.config import settings_for
from decoder.io import save_decoder
from decoder.model import Decoder


@pytest.fixture(scope="module")
def decoder_and_shards(tmp_path_factory):
    spec = shared_open_clip(tmp_path_factory)
    root = tmp_path_factory.mktemp("denoise")
    make_shape_shards(root / "val", spec, "val", 6)
    torch.manual_seed(0)
    cfg = settings_for("smoke").decoder.for_clip(spec.embed_dim, spec.text_width)
    save_decoder(root / "decoder", Decoder(cfg).eval(), spec)
    return root


def run(root, *extra: str) -> int:
    return load_bench("bench_decoder_denoise").main(
        ["--decoder", str(root / "decoder"), "--val-shards", str(root / "val"), "--steps", "5", "--threads", "1", *extra])


def test_every_reading_gets_a_row(decoder_and_shards, capsys):
    root = decoder_and_shards
    out = root / "rows.json"
    assert run(root, "--images", "4", "--timesteps", "2,50", "--from-draft", "30,99", "--json", str(out)) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert result["images"] == 4
    # 5 DDIM steps over 100 trailing: 99, 79, 59, 39, 19; a start at 30 begins at 19
    assert list(rows) == ["real", "decoded", "draft", "x0 @ t=2", "noisy @ t=2", "x0 @ t=50", "noisy @ t=50",
                          "from draft @ t=19", "from draft @ t=99"]
    for name, row in rows.items():
        assert all(0 <= row[k] <= 1 for k in ("color", "shape", "size", "position", "background", "pixel_shape")), name
    assert rows["real"]["pixel_shape"] == 1.0  # the pixel check finds the rendering it compares against
    assert rows["x0 @ t=2"]["input_mse"] < rows["x0 @ t=50"]["input_mse"]
    assert rows["x0 @ t=2"]["mse"] > 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("| ") for line in lines) == len(rows) + 1  # the header and a line per row


@pytest.mark.parametrize(("extra", "message"), [
    (["--timesteps", "2,x"], "whole timesteps"),
    (["--timesteps", "100"], "outside this decoder's schedule"),
    (["--from-draft", "10"], "below the sampler's last step"),
    (["--best-of", "0"], "at least 1"),
    (["--best-of", "two"], "whole numbers"),
])
def test_wrong_timesteps_are_refused(decoder_and_shards, capsys, extra, message):
    assert run(decoder_and_shards, "--images", "2", *extra) == 2
    assert message in capsys.readouterr().err


def test_starting_from_the_draft_of_a_decoder_without_one_is_refused(decoder_and_shards, tmp_path_factory, tmp_path,
                                                                     capsys):
    spec = shared_open_clip(tmp_path_factory)
    cfg = settings_for("smoke").decoder.override(draft_width=0).for_clip(spec.embed_dim, spec.text_width)
    save_decoder(tmp_path / "plain", Decoder(cfg).eval(), spec)
    args = ["--decoder", str(tmp_path / "plain"), "--val-shards", str(decoder_and_shards / "val"), "--from-draft", "99"]
    assert load_bench("bench_decoder_denoise").main(args) == 2
    assert "has no draft" in capsys.readouterr().err


def test_best_of_rows_and_a_second_clip_as_judge(decoder_and_shards, tmp_path_factory, tmp_path):
    root = decoder_and_shards
    out = root / "best.json"
    source = shared_open_clip(tmp_path_factory)  # the shards' own CLIP as judge, as a model folder of its own
    judge = shutil.copytree(Path(source.model).parent, tmp_path / "judge")
    source.save(judge)
    args = ["--images", "4", "--timesteps", "", "--best-of", "1,3", "--judge", str(judge), "--json", str(out)]
    assert run(root, *args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["real", "decoded", "draft", "best of 1", "best of 3"]
    assert rows["best of 1"] == rows["decoded"]  # candidate 0 is the plain decode
    # the same CLIP as judge reads what the shards' CLIP reads
    assert all(row["judge_shape"] == row["shape"] for row in rows.values())
