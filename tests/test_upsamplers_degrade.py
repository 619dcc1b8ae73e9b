"""Noise-conditioning augmentation: deterministic per seed, batch independent, shapes and ranges kept."""

from __future__ import annotations

import pytest
import torch

from upsamplers.config import AugmentConfig
from upsamplers.degrade import degrade, gaussian_kernel, jpeg

BLUR = AugmentConfig(kind="blur")
BSR = AugmentConfig(kind="bsr", noise_max=0.1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waiting on a shared, contended CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def images(n: int = 3, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 3, size, size)
    x[:, :, size // 4: size // 2, size // 4: 3 * size // 4] = 0.8  # sharp-edged rectangles
    return (x + 0.3 * torch.rand(n, 3, size, size, generator=g) - 0.5).clamp(-1, 1)


def gens(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("cfg", [BLUR, BSR], ids=["blur", "bsr"])
def test_deterministic_for_a_seed_and_keeps_shape_and_range(cfg):
    x = images()
    a = degrade(x, cfg, 8, torch.tensor([0.2, 0.7, 1.0]), gens([1, 2, 3]))
    b = degrade(x, cfg, 8, torch.tensor([0.2, 0.7, 1.0]), gens([1, 2, 3]))
    c = degrade(x, cfg, 8, torch.tensor([0.2, 0.7, 1.0]), gens([4, 5, 6]))
    assert a.shape == (3, 3, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1


@pytest.mark.parametrize("cfg", [BLUR, BSR], ids=["blur", "bsr"])
def test_an_image_does_not_depend_on_its_batch(cfg):
    x = images()
    batch = degrade(x, cfg, 16, 0.8, gens([7, 8, 9]))
    alone = degrade(x[1:2], cfg, 16, 0.8, gens([8]))
    assert torch.equal(batch[1:2], alone)


def test_inference_keeps_the_low_res_size_and_non_square_shapes():
    x = images(2, 24)[:, :, :, :16]
    out = degrade(x, BSR, (24, 16), 0.5, gens([0, 1]))
    assert out.shape == (2, 3, 24, 16)
    assert degrade(x, BLUR, (24, 16), 0.0, gens([0, 1])).shape == (2, 3, 24, 16)


def test_stage_one_at_level_zero_is_the_fixed_blur_only():
    x = images(2)
    a = degrade(x, BLUR, 16, 0.0, gens([0, 1]))
    b = degrade(x, BLUR, 16, 0.0, gens([5, 6]))
    assert torch.equal(a, b)
    noisy = degrade(x, BLUR, 16, 1.0, gens([0, 1]))
    assert (noisy - a).std() == pytest.approx(BLUR.noise_max, rel=0.3)


def test_bsr_strength_grows_with_the_level():
    x = images(4, 64)
    clean = torch.nn.functional.interpolate(x, size=(16, 16), mode="area")
    mild = degrade(x, BSR, 16, 0.05, gens(range(4)))
    strong = degrade(x, BSR, 16, 1.0, gens(range(4)))
    assert (strong - clean).abs().mean() > 2 * (mild - clean).abs().mean()


def test_kernels_are_normalised_and_anisotropic_ones_are_rotated():
    iso = gaussian_kernel(7, 1.0)
    assert iso.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(iso, iso.T)
    aniso = gaussian_kernel(9, 2.0, 0.5)
    assert torch.allclose(gaussian_kernel(9, 2.0, 0.5, torch.pi / 2), aniso.T, atol=1e-6)
    assert not torch.allclose(aniso, aniso.T)


def test_jpeg_round_trip_is_lossy_but_close():
    x = images(1, 32)[0]
    out = jpeg(x, 30)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert 0 < (out - x).abs().mean() < 0.2


def test_bad_inputs_are_clear_errors():
    x = images(2)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        degrade(x[0], BLUR, 8, 0.1, gens([0]))
    with pytest.raises(ValueError, match="one generator per image"):
        degrade(x, BLUR, 8, 0.1, gens([0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        degrade(x, BLUR, 8, 1.5, gens([0, 1]))
