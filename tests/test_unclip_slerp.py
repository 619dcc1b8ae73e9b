"""slerp: endpoints, norms, symmetry, midpoints, the parallel and opposite cases, batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unclip.slerp import angle, slerp, slerp_path


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_endpoints_are_the_inputs():
    a, b = unit(5, 32, seed=1), unit(5, 32, seed=2)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)


@pytest.mark.parametrize("theta", [0.1, 0.3, 0.5, 0.77])
def test_unit_inputs_stay_on_the_sphere(theta):
    out = slerp(unit(64, 32, seed=3), unit(64, 32, seed=4), theta)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(64))


def test_symmetry():
    a, b = unit(8, 16, seed=5), unit(8, 16, seed=6)
    for theta in (0.2, 0.5, 0.9):
        torch.testing.assert_close(slerp(a, b, theta), slerp(b, a, 1 - theta))


def test_midpoint_of_orthogonal_vectors():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    torch.testing.assert_close(slerp(a, b, 0.5), torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2))
    third = slerp(a, b, 1 / 3)
    torch.testing.assert_close(third, torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6), 0.0]))


def test_angle_is_one_scalar_per_pair_and_even_steps_along_the_arc():
    a, b = unit(4, 32, seed=7), unit(4, 32, seed=8)
    omega = angle(a, b)
    assert omega.shape == (4,)
    path = slerp_path(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (5, 4, 32)
    steps = torch.stack([angle(path[i], path[i + 1]) for i in range(4)])
    torch.testing.assert_close(steps, (omega / 4).expand(4, 4).to(steps.dtype), atol=1e-5, rtol=1e-5)


def test_not_elementwise():
    """diffusers' community pipelines take arccos per element; a true slerp of unit vectors is unit norm."""
    a, b = torch.tensor([0.6, 0.8]), torch.tensor([0.8, -0.6])
    torch.testing.assert_close(slerp(a, b, 0.5), F.normalize(a + b, dim=-1))


def test_parallel_vectors_interpolate_linearly():
    a = unit(3, 16, seed=9)
    torch.testing.assert_close(slerp(a, a, 0.3), a)
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)
    nearly = F.normalize(a + 1e-7 * unit(3, 16, seed=10), dim=-1)
    out = slerp(a, nearly, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, a, atol=1e-6, rtol=0)


def test_opposite_vectors_take_a_finite_half_turn():
    a = unit(3, 16, seed=11)
    mid = slerp(a, -a, 0.5)
    assert torch.isfinite(mid).all()
    torch.testing.assert_close(mid.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close((mid * a).sum(-1), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(slerp(a, -a, 0.0), a)
    torch.testing.assert_close(slerp(a, -a, 1.0), -a)
    quarter = slerp(a, -a, 0.25)
    torch.testing.assert_close(angle(a, quarter).float(), torch.full((3,), math.pi / 4), atol=1e-5, rtol=0)


def test_keeps_dtype_and_takes_per_pair_thetas():
    a, b = unit(4, 8, seed=12).half(), unit(4, 8, seed=13).half()
    assert slerp(a, b, 0.5).dtype == torch.float16
    thetas = torch.tensor([0.0, 1.0, 0.0, 1.0])
    out = slerp(a.float(), b.float(), thetas)
    torch.testing.assert_close(out[0], a[0].float())
    torch.testing.assert_close(out[1], b[1].float())


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one shape"):
        slerp(torch.ones(3), torch.ones(4), 0.5)
