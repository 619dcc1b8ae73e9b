"""CLIP training degradations: what they leave alone, what each one does, and their settings."""

from __future__ import annotations

import pydantic
import pytest
import torch

from clip.augment import ClipAugmentConfig, degrade
from clip.train import normalise_pixels

NOTHING = dict(min_scale=1.0, max_blur=0.0, max_shift=0.0, max_noise=0.0, max_ringing=0.0, max_blotch=0.0)


def squares(n: int = 4, size: int = 32) -> torch.Tensor:
    x = torch.zeros(n, 3, size, size)
    x[:, :, 10:20, 12:22] = 1.0
    return x


def edge_strength(x: torch.Tensor) -> torch.Tensor:
    return (x[..., :, 1:] - x[..., :, :-1]).abs().amax(dim=(1, 2, 3))


def test_probability_zero_returns_the_images_unchanged():
    x = squares()
    assert degrade(x, ClipAugmentConfig()) is x


def test_every_degradation_at_zero_strength_is_the_identity():
    x = torch.rand(3, 3, 32, 32)
    out = degrade(x, ClipAugmentConfig(probability=1.0, **NOTHING))
    assert torch.allclose(out, x, atol=1e-5)


def test_blur_and_rescale_soften_edges_and_keep_the_mean():
    x = squares(n=16)
    for change in ({"max_blur": 2.0}, {"min_scale": 0.3}):
        out = degrade(x, ClipAugmentConfig(probability=1.0, **(NOTHING | change)), torch.Generator().manual_seed(1))
        assert edge_strength(out).median() < 0.9 and edge_strength(out).max() <= 1.0, change
        assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.02), change


def test_ringing_overshoots_beside_edges():
    x = squares() * 0.5 + 0.25
    out = degrade(x, ClipAugmentConfig(probability=1.0, **(NOTHING | {"max_ringing": 2.0})),
                  torch.Generator().manual_seed(0))
    assert (out.amax(dim=(1, 2, 3)) > 0.76).all() and (out.amin(dim=(1, 2, 3)) < 0.24).all()


def test_shift_moves_the_object_by_at_most_the_limit():
    x = squares(n=64)
    out = degrade(x, ClipAugmentConfig(probability=1.0, **(NOTHING | {"max_shift": 0.1})),
                  torch.Generator().manual_seed(0))
    cols = torch.arange(32.0)

    def centre(img):
        return (img[:, 0].sum(1) * cols).sum(1) / img[:, 0].sum(dim=(1, 2))
    moved = centre(out) - centre(x)
    assert moved.abs().max() <= 0.1 * 32 + 1e-3
    assert moved.abs().max() > 1.0  # most shifts are a pixel or more


def test_noise_stays_in_range_and_a_generator_makes_it_repeatable():
    x = torch.rand(8, 3, 16, 16)
    cfg = ClipAugmentConfig(probability=1.0, max_noise=0.3, max_blotch=0.3)
    a = degrade(x, cfg, torch.Generator().manual_seed(3))
    b = degrade(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and a.shape == x.shape
    assert not torch.allclose(a, x, atol=0.01)


def test_probability_picks_that_share_of_images():
    x = torch.rand(400, 3, 8, 8)
    out = degrade(x, ClipAugmentConfig(probability=0.25, max_noise=0.2), torch.Generator().manual_seed(0))
    changed = (out != x).flatten(1).any(1).float().mean()
    assert 0.17 < changed < 0.33


def test_training_input_is_degraded_only_when_asked():
    pixels = (squares() * 255).to(torch.uint8)
    plain = normalise_pixels(pixels)
    assert torch.equal(plain, normalise_pixels(pixels, ClipAugmentConfig()))
    assert not torch.allclose(plain, normalise_pixels(pixels, ClipAugmentConfig(probability=1.0, max_blur=2.0)))


@pytest.mark.parametrize("field, value", [("probability", 1.5), ("min_scale", 0.0), ("max_shift", 0.3),
                                          ("max_noise", -0.1)])
def test_invalid_settings_are_refused(field, value):
    with pytest.raises(pydantic.ValidationError, match=field):
        ClipAugmentConfig(**{field: value})
