"""bench/bench_manipulations.py measures round trips and text diffs for every best-of it is given, and a
second CLIP's readings beside the models' own."""

from __future__ import annotations

import json

import pytest
import torch
from bench_script import load_bench
from tiny_clips import make_open_clip

from unclip.testing import shared_tiny_models


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread beats two contending ones
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return shared_tiny_models(tmp_path_factory, make_open_clip)


def test_every_best_of_and_the_judge_get_their_figures(models, tmp_path):
    out = tmp_path / "manip.json"
    args = ["--models", str(models), "--images", "2", "--steps", "2", "--thetas", "0,0.5", "--prior-thetas", "1",
            "--captions", "none", "--best-of", "1,2", "--judge", str(models / "clip"), "--json", str(out)]
    assert load_bench("bench_manipulations").main(args) == 0
    result = json.loads(out.read_text())
    for judge in ("", "judge/", "pixel/"):
        assert 0 <= result[f"{judge}real/others_kept"] <= 1
        for n in (1, 2):
            for key in ("text/none/best_of={n}/theta=0", "text/none/best_of={n}/theta=0.5",
                        "prior/none/best_of={n}/theta=1"):
                shares = [result[f"{judge}{key.format(n=n)}/{m}"] for m in ("colour_moved", "others_kept", "both")]
                assert all(0 <= v <= 1 for v in shares) and shares[2] <= min(shares[:2])
    # the judge here is the same CLIP, so it reads every frame the same way
    assert all(result[f"judge/{k}"] == v for k, v in result.items() if f"judge/{k}" in result)
    assert result["variation_eta0_psnr_mean"] > 0


def test_a_wrong_best_of_is_refused(models):
    with pytest.raises(SystemExit) as err:
        load_bench("bench_manipulations").main(["--models", str(models), "--best-of", "1,0"])
    assert err.value.code == 2


def test_the_pixel_check_reads_renderings_exactly():
    from data.shapes import parse_caption, render
    from data.transforms import to_tensor

    bench = load_bench("bench_manipulations")
    red = parse_caption("a large red circle in the center on a green background")
    assert red is not None
    cases = [(red, red, (True, True)), (red.replace(color="blue"), red, (False, True)),
             (red.replace(shape="square"), red, (True, False)), (red.replace(color="blue", position="left"), red,
                                                                  (False, False))]
    images = torch.stack([to_tensor(render(drawn, 32), 32) for drawn, _, _ in cases])
    assert bench.pixel_hits(images, [target for _, target, _ in cases]) == [want for _, _, want in cases]
