"""Decoding and inversion: guidance, seeded batch-size-independent samples, the DDIM round trip."""

from __future__ import annotations

import pytest
import torch

from core.diffusion import NoiseConfig, sampling_scheduler
from core.errors import ConfigError
from decoder.evaluate import psnr
from decoder.sample import Caption, blended, conditions, decode, denoiser, invert
from decoder.testing import SIZE, fake_caption, fake_image_embeds, tiny_decoder


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def decoder():
    return tiny_decoder(seed=3)


def rows(text: Caption, index) -> Caption:
    return Caption(text.embeds[index], text.tokens[index], text.mask[index])


def test_guidance_scale_one_is_the_conditional_prediction(decoder):
    x, t = torch.randn(3, 3, SIZE, SIZE), torch.tensor([10, 40, 90])
    cond = conditions(decoder, fake_image_embeds(3), fake_caption(3))
    with torch.no_grad():
        plain = decoder(x, t, **cond)
        assert torch.equal(denoiser(decoder, cond, 1.0)(x, t), plain)
        uncond = decoder(x, t, **decoder.unconditional(3, cond["text_tokens"].shape[1], "cpu"))
        assert torch.allclose(denoiser(decoder, cond, 4.0)(x, t), uncond + 4.0 * (plain - uncond), atol=1e-5)
    with pytest.raises(ConfigError, match="guidance"):
        denoiser(decoder, cond, 0.5)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp"])
def test_seeded_and_batch_size_independent(decoder, sampler):
    embeds, text, seeds = fake_image_embeds(4), fake_caption(4), [7, 8, 9, 10]
    kw = dict(steps=4, sampler=sampler, guidance=2.0, eta=0.5)
    whole = decode(decoder, embeds, text, seeds, **kw)
    assert whole.shape == (4, 3, SIZE, SIZE) and whole.min() >= -1 and whole.max() <= 1
    assert torch.equal(whole, decode(decoder, embeds, text, seeds, **kw))
    assert torch.allclose(whole, decode(decoder, embeds, text, seeds, batch_size=3, **kw), atol=1e-5)
    one = decode(decoder, embeds[2:3], rows(text, slice(2, 3)), [9], **kw)
    assert torch.allclose(whole[2:3], one, atol=1e-5)
    assert not torch.allclose(whole, decode(decoder, embeds, text, [s + 1 for s in seeds], **kw), atol=1e-3)


def test_decoding_without_a_caption_and_threshold(decoder):
    out = decode(decoder, fake_image_embeds(2), None, [1, 2], steps=3, guidance=6.0, threshold=1.0)
    assert out.shape == (2, 3, SIZE, SIZE) and torch.isfinite(out).all()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp"])
def test_zero_terminal_snr_samples_stay_finite(sampler):
    decoder = tiny_decoder(seed=4, noise=NoiseConfig(prediction="v_prediction", train_steps=100, zero_terminal_snr=True))
    out = decode(decoder, fake_image_embeds(2), fake_caption(2), [1, 2], steps=4, sampler=sampler, guidance=2.0)
    assert torch.isfinite(out).all()
    scheduler = sampling_scheduler(decoder.cfg.noise, sampler, 4)
    assert scheduler.alphas_cumprod[-1] < 1e-6  # sampled on the schedule it was trained on


def test_ddim_inversion_round_trip(decoder):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(2, 3, 1, 1, generator=g) * 2 - 1).expand(2, 3, SIZE, SIZE).clone()
    images[:, :, 4:10, 5:12] = -images[:, :, 4:10, 5:12]  # a flat picture with a block in it
    embeds, text = fake_image_embeds(2), fake_caption(2)
    x_T = invert(decoder, images, embeds, text, steps=50)
    assert x_T.shape == images.shape and torch.isfinite(x_T).all()
    again = decode(decoder, embeds, text, [0, 1], steps=50, sampler="ddim", guidance=1.0, eta=0.0, x_T=x_T)
    assert psnr(again, images).min() > 25  # an untrained network; the trained demo reaches more
    assert torch.equal(x_T, invert(decoder, images, embeds, text, steps=50))


def test_caption_blend_moves_between_the_two_captions(decoder):
    embeds, text = fake_image_embeds(3), fake_caption(6)
    first, other = rows(text, slice(0, 3)), rows(text, slice(3, 6))
    x, t = torch.randn(3, 3, SIZE, SIZE), torch.tensor([10, 40, 90])
    a, b = conditions(decoder, embeds, first), conditions(decoder, embeds, other)
    with torch.no_grad():
        fa, fb = decoder(x, t, **a), decoder(x, t, **b)
        mixed = blended(decoder, a, b, torch.tensor([0.0, 1.0, 0.25]))(x, t)
    torch.testing.assert_close(mixed[0], fa[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[1], fb[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[2], 0.75 * fa[2] + 0.25 * fb[2], atol=1e-5, rtol=0)
    kw = dict(steps=3, guidance=1.0)
    ends = decode(decoder, embeds, first, [1, 2, 3], blend=(other, torch.tensor([0.0, 1.0, 0.5])), **kw)
    torch.testing.assert_close(ends[0], decode(decoder, embeds[:1], rows(first, slice(0, 1)), [1], **kw)[0],
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(ends[1], decode(decoder, embeds[1:2], rows(other, slice(1, 2)), [2], **kw)[0],
                               atol=1e-5, rtol=0)
    for bad in ({"guidance": 2.0}, {"text": None}, {"weights": torch.tensor([0.5])}):
        with pytest.raises(ConfigError, match="caption blend"):
            decode(decoder, embeds, bad.get("text", first), [1, 2, 3], steps=2, guidance=bad.get("guidance", 1.0),
                   blend=(other, bad.get("weights", torch.zeros(3))))


def test_wrong_inputs_are_config_errors(decoder):
    with pytest.raises(ConfigError, match="seeds"):
        decode(decoder, fake_image_embeds(2), fake_caption(2), [1], steps=2)
    with pytest.raises(ConfigError, match="x_T"):
        decode(decoder, fake_image_embeds(2), fake_caption(2), [1, 2], steps=2, x_T=torch.zeros(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="captions"):
        decode(decoder, fake_image_embeds(2), fake_caption(3), [1, 2], steps=2)
    with pytest.raises(ConfigError, match="sampler"):
        decode(decoder, fake_image_embeds(2), None, [1, 2], steps=2, sampler="euler")
    with pytest.raises(ConfigError, match="steps"):
        decode(decoder, fake_image_embeds(2), None, [1, 2], steps=0)
    with pytest.raises(ConfigError, match="images"):
        invert(decoder, torch.zeros(2, 3, 8, 8), fake_image_embeds(2), None, steps=2)
