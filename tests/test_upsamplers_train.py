"""Upsampler training: pure batches of crop pairs, a falling loss through fit, the CLI, the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.diffusion import NoiseConfig
from core.trainer import TrainConfig, fit
from upsamplers.config import UpsamplerConfig, UpsamplerModelConfig
from upsamplers.evaluate import evaluate_upsampler, psnr, sharpness, ssim
from upsamplers.model import Upsampler, upsample_bicubic
from upsamplers.pairs import pair_batches, pick_crop
from upsamplers.train import main, make_loss

CFG = UpsamplerConfig(stage=2, low_res=8, high_res=32, model=UpsamplerModelConfig(channels=(8, 16), layers_per_block=1),
                      sample_steps=2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waiting on a shared, contended CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def squares(n: int = 12, size: int = 32) -> torch.Tensor:
    """uint8 images with sharp-edged squares on flat backgrounds, like the shapes data."""
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    for i in range(n):
        images[i] = torch.randint(0, 256, (3, 1, 1), generator=g, dtype=torch.uint8)
        top, left = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
        images[i, :, top:top + size // 2, left:left + size // 2] = torch.randint(0, 256, (3, 1, 1), generator=g,
                                                                                 dtype=torch.uint8)
    return images


def make_batches(images, cfg, crop, batch_size, seed, crop_tries=1, folder=None):
    """Crop pairs streamed from image shards of `images`, as upsamplers.train makes them."""
    import tempfile

    from data.shards import ShardSet, finish_index, shard_name, write_shard

    folder = Path(folder or tempfile.mkdtemp(prefix="upsampler-shards-"))
    for i in range(0, len(images), 5):  # a few shards
        part = images[i:i + 5]
        write_shard(folder / shard_name(i // 5), {"images": part}, [""] * len(part), [str(i + k) for k in range(len(part))])
    finish_index(folder, {})
    return ShardSet.open(folder).batches(("images",), batch_size, seed, buffer_rows=8,
                                         prepare=pair_batches(cfg, crop, batch_size, crop_tries))


def test_batches_are_crops_with_their_conditions_and_pure_per_epoch():
    batches = make_batches(squares(), CFG, crop=16, batch_size=4, seed=3)
    first = list(batches(0, 0, 1))
    assert len(first) == 3  # every image once: buffers of 10 and 2 (+ the 2 carried over) rows
    high, cond, level = first[0]
    assert high.shape == cond.shape == (4, 3, 16, 16) and level.shape == (4,)
    assert high.min() >= -1 and high.max() <= 1 and cond.min() >= -1 and cond.max() <= 1
    assert ((level >= 0) & (level <= 1)).all()
    again = list(batches(0, 0, 1))
    assert all(torch.equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y))
    assert not torch.equal(first[0][0], next(iter(batches(1, 0, 1)))[0])
    rank0, rank1 = next(iter(batches(0, 0, 2))), next(iter(batches(0, 1, 2)))
    assert not torch.equal(rank0[0], rank1[0])


def test_detail_seeking_crops_find_the_object_and_stay_seeded():
    image = torch.full((3, 64, 64), 200, dtype=torch.uint8)
    image[:, 4:12, 48:56] = 20  # one small object in a corner of a flat image
    def hits(tries: int, seed: int) -> bool:
        window = pick_crop(image, 16, tries, torch.Generator().manual_seed(seed))
        assert window.shape == (3, 16, 16)
        return bool(window.float().std() > 0)
    plain = sum(hits(1, seed) for seed in range(50))
    seeking = sum(hits(16, seed) for seed in range(50))
    assert plain < 12 and seeking > 28  # 8% of random windows touch the object, 1 - 0.92**16 = 74% of best-of-16s
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(pick_crop(image, 16, 8, g1), pick_crop(image, 16, 8, g2))
    batches = make_batches(squares(), CFG, crop=16, batch_size=4, seed=3, crop_tries=4)
    assert all(torch.equal(a, b) for x, y in zip(batches(0, 0, 1), batches(0, 0, 1)) for a, b in zip(x, y))


def test_a_few_steps_through_fit_lower_the_loss(tmp_path):
    # ε-prediction, whose loss starts near 1 (the residual x0 loss starts at the small bicubic error)
    cfg = CFG.override(model={**CFG.model.model_dump(), "residual": False}, noise=NoiseConfig(prediction="epsilon"))
    torch.manual_seed(0)
    train = TrainConfig(steps=40, batch_size=6, lr=3e-3, warmup_steps=2, log_every=10, ema_decay=0.9)
    batches = make_batches(squares(), cfg, crop=16, batch_size=6, seed=0)
    result = fit(Upsampler(cfg), make_loss(cfg), batches, train, tmp_path / "run", run_config=cfg)
    losses = [loss for _, loss in result.losses]
    assert result.step == 40
    assert losses[-1] < 0.85 * losses[0]


def test_metrics_against_ground_truth():
    truth = squares(4).float() / 127.5 - 1
    assert torch.all(psnr(truth, truth) == 100)
    assert torch.allclose(ssim(truth, truth), torch.ones(4))
    assert torch.allclose(sharpness(truth, truth), torch.ones(4))
    low = torch.nn.functional.interpolate(truth, scale_factor=0.25, mode="area")
    bicubic = upsample_bicubic(low, (32, 32))
    assert (sharpness(bicubic, truth) < 1).all()
    assert (ssim(bicubic, truth) < 1).all() and (psnr(bicubic, truth) < 100).all()
    noisy = (truth + 0.3 * torch.randn_like(truth)).clamp(-1, 1)
    assert (sharpness(noisy, truth) > 1).all()


def test_ssim_matches_a_direct_windowed_computation():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 20, 24) * 2 - 1, torch.rand(2, 3, 20, 24) * 2 - 1
    y[1] = (x[1] + 0.2 * torch.randn_like(x[1])).clamp(-1, 1)  # one related pair, one unrelated
    a, b = ((x + 1) / 2).double(), ((y + 1) / 2).double()
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-0.5 * (r / 1.5) ** 2)
    w = g[:, None] * g[None, :] / g.sum() ** 2  # the 11×11 Gaussian window, summing to 1
    expected = torch.zeros(2)
    for i in range(2):
        scores = []
        for top in range(20 - 10):
            for left in range(24 - 10):
                pa, pb = a[i, :, top:top + 11, left:left + 11], b[i, :, top:top + 11, left:left + 11]
                ma, mb = (pa * w).sum((1, 2)), (pb * w).sum((1, 2))
                va, vb = (pa * pa * w).sum((1, 2)) - ma**2, (pb * pb * w).sum((1, 2)) - mb**2
                cov = (pa * pb * w).sum((1, 2)) - ma * mb
                scores.append(((2 * ma * mb + 1e-4) * (2 * cov + 9e-4)) / ((ma**2 + mb**2 + 1e-4) * (va + vb + 9e-4)))
        expected[i] = torch.stack(scores).mean()
    assert torch.allclose(ssim(x, y), expected, atol=1e-5)
    assert ssim(x, y)[1] > 0.5 > ssim(x, y)[0]


def test_evaluation_reports_model_and_bicubic_and_a_side_by_side_image():
    torch.manual_seed(0)
    truth = squares(2).float() / 127.5 - 1
    metrics = evaluate_upsampler(Upsampler(CFG).eval(), truth, steps=1)
    for key in ("psnr", "ssim", "sharpness"):
        assert isinstance(metrics[key], float) and isinstance(metrics[f"bicubic_{key}"], float)
    assert metrics["side_by_side"].size == (4 * 32, 2 * 32)


def test_cli_trains_the_smoke_preset_and_writes_a_model_folder(tmp_path, capsys):
    out = tmp_path / "up"
    code = main(["--stage", "1", "--preset", "smoke", "--out", str(out), "--set", "train.steps=2",
                 "--set", "upsampler.sample_steps=1"])
    assert code == 0
    folder = out / "model"
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "upsampler_config.json", "train_settings.json",
                                                  "metrics.json"}
    assert {"psnr", "bicubic_psnr", "sharpness"} <= set(json.loads((folder / "metrics.json").read_text()))
    assert main(["--stage", "1", "--preset", "nope", "--out", str(out)]) == 2
    assert "unknown stage-1 upsampler preset 'nope'" in capsys.readouterr().err


def test_flat_noise_sees_grain_on_flat_regions_only():
    from upsamplers.evaluate import flat_mask, flat_noise

    truth = squares(4).float() / 127.5 - 1
    mask = flat_mask(truth)
    assert 0.3 < float(mask.mean()) < 1.0, "the squares' edges are not flat, their insides and backgrounds are"
    assert flat_noise(truth, mask) < 1e-6
    grain = (truth + 0.1 * torch.randn_like(truth)).clamp(-1, 1)
    assert flat_noise(grain, mask) > 0.02
    blurred = torch.nn.functional.avg_pool2d(truth, 3, stride=1, padding=1, count_include_pad=False)
    assert flat_noise(blurred, mask) < 0.5 * flat_noise(grain, mask), "softer edges are not grain"
