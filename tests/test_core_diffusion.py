"""The shared noise process: DDIM inversion under every parameterisation, the shifted schedule, the one
scheduler factory and the one training loss."""

from __future__ import annotations

import pytest
import torch

from core.diffusion import (
    LossWeights,
    NoiseConfig,
    ddim_invert,
    diffusion_loss,
    outline_weights,
    sample,
    sample_error,
    sampling_scheduler,
    training_scheduler,
    training_timesteps,
)
from core.errors import ConfigError


def gaussian_denoiser(noise: NoiseConfig, mean: float = 0.3, std: float = 0.5):
    """The exact denoiser of data x0 ~ N(mean, std²) per pixel, written in `noise`'s parameterisation."""
    alphas = training_scheduler(noise).alphas_cumprod

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alphas[t].view(-1, 1, 1, 1)
        x0 = mean + a.sqrt() * std**2 / (a * std**2 + 1 - a) * (x - a.sqrt() * mean)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return {"sample": x0, "epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[noise.prediction]
    return denoise


def test_ddim_inversion_round_trip_is_the_same_under_every_parameterisation():
    x0 = 0.3 + 0.5 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    inverted = {}
    for prediction in ("epsilon", "sample", "v_prediction"):
        noise = NoiseConfig(prediction=prediction, train_steps=1000)
        denoise = gaussian_denoiser(noise)
        x_T = ddim_invert(denoise, noise, x0, steps=50)
        assert torch.isfinite(x_T).all(), prediction
        assert 0.7 < float(x_T.std()) < 1.3, prediction  # noise-like, not blown up
        again = sample(denoise, sampling_scheduler(noise, "ddim", 50), x_T)
        assert float((again - x0).abs().max()) < 0.15, prediction  # DDIM inversion's usual small drift
        inverted[prediction] = x_T
    # an x0-predictor is inverted through its ε at the level it was queried at: the ε-predictor's path
    assert torch.allclose(inverted["sample"], inverted["epsilon"], atol=1e-4)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_snr_shift_scales_every_steps_snr_and_reaches_every_sampler(schedule):
    def snr(noise: NoiseConfig) -> torch.Tensor:
        alpha_bar = training_scheduler(noise).alphas_cumprod.double()
        return alpha_bar / (1 - alpha_bar)

    base = snr(NoiseConfig(schedule=schedule, prediction="v_prediction"))
    shifted_cfg = NoiseConfig(schedule=schedule, prediction="v_prediction", snr_shift=0.5)
    shifted = snr(shifted_cfg)
    ratio = shifted / base
    assert torch.allclose(ratio[1:-1], torch.full_like(ratio[1:-1], 0.25), rtol=1e-3)
    assert bool((shifted[1:] < shifted[:-1]).all())  # still a noising process
    for sampler in ("ddim", "ddpm", "dpmpp"):
        sched = sampling_scheduler(shifted_cfg, sampler, 10)
        assert torch.allclose(sched.alphas_cumprod.double(), training_scheduler(shifted_cfg).alphas_cumprod.double())
    # inversion and sampling share the shifted schedule, so the round trip closes about as well as
    # without the shift (DDIM's usual drift grows a little as the first steps get larger)
    x0 = 0.3 + 0.5 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    drift = {}
    for name, cfg in (("base", NoiseConfig(schedule=schedule, prediction="v_prediction")), ("shifted", shifted_cfg)):
        denoise = gaussian_denoiser(cfg)
        again = sample(denoise, sampling_scheduler(cfg, "ddim", 50), ddim_invert(denoise, cfg, x0, steps=50))
        drift[name] = float((again - x0).abs().mean())
    assert drift["shifted"] < min(2 * drift["base"], 0.1), drift

def test_snr_shift_outside_zero_to_one_is_refused():
    for bad in (0.0, -1.0, 2.0):
        with pytest.raises(ValueError, match="snr_shift"):
            NoiseConfig(snr_shift=bad)


def test_outline_weights_mark_the_object_edges_only():
    x0 = -torch.ones(2, 3, 16, 16)
    x0[0, :, 5:9, 5:9] = 1  # a square on the first image, the second is flat
    w = outline_weights(x0, 4.0)
    assert w.shape == (2, 1, 16, 16)
    assert torch.equal(w[1], torch.ones(1, 16, 16))  # a flat image keeps the plain loss
    assert float(w[0].max()) == pytest.approx(5.0)
    assert w[0, 0, 0, 0] == 1 and w[0, 0, 6, 6] == 1  # far outside and deep inside: no extra weight
    assert w[0, 0, 4, 6] > 1 and w[0, 0, 5, 6] > 1 and w[0, 0, 8, 6] > 1 and w[0, 0, 9, 6] > 1  # both sides of an edge


def test_pixel_weights_weight_each_images_error():
    diff = torch.randn(7, 3, 8, 8)
    assert torch.allclose(sample_error(diff, None), diff.pow(2).mean(dim=(1, 2, 3)))
    flat = torch.full((7, 1, 8, 8), 3.0)  # uniform weights: the plain mean
    assert torch.allclose(sample_error(diff, flat), diff.pow(2).mean(dim=(1, 2, 3)))
    edge = torch.ones(7, 1, 8, 8)
    edge[..., 0, 0] = 100.0  # one heavy pixel pulls each image's error toward its own
    assert torch.allclose(sample_error(diff, edge), (diff.pow(2) * edge).sum(dim=(1, 2, 3)) / (3 * edge.sum(dim=(1, 2, 3))))


def test_low_noise_share_draws_that_share_of_timesteps_from_the_low_end():
    torch.manual_seed(0)
    t = training_timesteps(100, 20000)
    assert int(t.min()) == 0 and int(t.max()) == 99
    assert float((t < 25).float().mean()) == pytest.approx(0.25, abs=0.02)
    t = training_timesteps(100, 20000, low_noise_share=0.5, low_noise_end=0.25)
    assert int(t.max()) == 99  # the rest still covers the whole schedule
    assert float((t < 25).float().mean()) == pytest.approx(0.5 + 0.5 * 0.25, abs=0.02)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_the_loss_is_zero_for_the_exact_target_and_the_mse_otherwise(prediction):
    noise = NoiseConfig(train_steps=50, prediction=prediction)
    scheduler = training_scheduler(noise)
    x0 = torch.randn(6, 3, 8, 8)
    seen = {}

    def oracle(x_t, t):  # recover the noise from x_t, then write the target in the scheduler's terms
        a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        seen["t"] = t
        return {"sample": x0, "epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction]

    torch.manual_seed(1)
    assert float(diffusion_loss(scheduler, x0, oracle)) == pytest.approx(0.0, abs=1e-8)
    assert seen["t"].shape == (6,) and int(seen["t"].max()) < 50
    torch.manual_seed(1)
    off = diffusion_loss(scheduler, x0, lambda x_t, t: oracle(x_t, t) + 0.5)
    assert float(off) == pytest.approx(0.25, rel=1e-4)
    torch.manual_seed(1)
    weighted = diffusion_loss(scheduler, x0, lambda x_t, t: oracle(x_t, t) + 0.5, LossWeights(min_snr_gamma=5.0))
    assert float(weighted) != pytest.approx(0.25, rel=1e-3)  # Min-SNR reweights the samples


def test_the_loss_draws_the_same_noise_in_either_memory_layout():
    scheduler = training_scheduler(NoiseConfig(train_steps=50))
    x0 = torch.randn(2, 3, 8, 8)
    inputs = {}
    for name, x in (("standard", x0), ("channels_last", x0.contiguous(memory_format=torch.channels_last))):
        torch.manual_seed(3)
        diffusion_loss(scheduler, x, lambda x_t, t, name=name: inputs.setdefault(name, x_t.clone()))
    assert torch.allclose(inputs["standard"], inputs["channels_last"])


def test_a_learned_variance_adds_the_bound_to_the_mse():
    scheduler = training_scheduler(NoiseConfig(train_steps=50, prediction="epsilon"))
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    out = torch.zeros(2, 6, 8, 8)
    torch.manual_seed(0)
    plain = diffusion_loss(scheduler, x0, lambda x_t, t: out[:, :3])
    torch.manual_seed(0)
    both = diffusion_loss(scheduler, x0, lambda x_t, t: out, learned_variance=True)
    assert float(both) > float(plain) > 0


def test_the_scheduler_factory_refuses_what_it_cannot_run_in_one_line():
    noise = NoiseConfig(train_steps=100)
    for bad, match in ((dict(sampler="euler", steps=10), "unknown sampler"), (dict(sampler="ddim", steps=0), "between 1"),
                       (dict(sampler="ddim", steps=101), "between 1"),
                       (dict(sampler="ddim", steps=10, threshold=-1.0), "threshold")):
        with pytest.raises(ConfigError, match=match):
            sampling_scheduler(noise, **bad)
    zero_snr = NoiseConfig(train_steps=100, zero_terminal_snr=True)
    assert sampling_scheduler(zero_snr, "dpmpp", 10).config.rescale_betas_zero_snr  # kept, as trained
