"""Learned variance (Nichol & Dhariwal 2021, GLIDE, Karlo): the network's extra output channels v in
[-1, 1] choose each pixel's log variance between the posterior's (v = -1) and beta_t's (v = 1).

Training adds the variational bound's term for that step to the usual MSE on the mean channels; the
mean enters the bound detached, so the bound trains the variance only and the MSE the mean (their
hybrid loss, with the bound weighted T / 1000 as in improved-diffusion's rescaled MSE). Sampling with
the variance is diffusers' UnCLIPScheduler (core.diffusion, sampler "unclip").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def split_variance(out: Tensor, channels: int = 3) -> tuple[Tensor, Tensor]:
    """(mean prediction, variance channels v) of a learned-variance output [B, 2·channels, ...]."""
    return out[:, :channels], out[:, channels:]


def vlb_loss(scheduler, x0: Tensor, x_t: Tensor, t: Tensor, prediction: Tensor, v: Tensor) -> Tensor:
    """The bound's term at t per sample [B] in bits per dimension, times T / 1000: KL(q(x_{t-1} | x_t, x0)
    || p(x_{t-1} | x_t)) for t > 0, the decoder's discretised likelihood of x0 (8-bit pixels) at t = 0."""
    steps = len(scheduler.alphas_cumprod)
    post_mean, post_logvar, clipped_logvar, log_beta = _posterior(scheduler, x0, x_t, t)
    pred_x0 = predicted_x0(scheduler, x_t, prediction.detach(), t)
    model_mean = _posterior(scheduler, pred_x0, x_t, t)[0]
    frac = (v.float() + 1) / 2
    model_logvar = frac * log_beta + (1 - frac) * clipped_logvar
    kl = normal_kl(post_mean, post_logvar, model_mean, model_logvar).flatten(1).mean(1) / math.log(2.0)
    nll = -discretized_log_likelihood(x0, model_mean, 0.5 * model_logvar).flatten(1).mean(1) / math.log(2.0)
    return torch.where(t == 0, nll, kl) * (steps / 1000.0)


def predicted_x0(scheduler, x_t: Tensor, prediction: Tensor, t: Tensor) -> Tensor:
    """The clean sample a prediction of the scheduler's kind (epsilon, sample, v) stands for."""
    alpha_bar = _at(scheduler.alphas_cumprod, t, x_t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (x_t - (1 - alpha_bar).sqrt() * prediction) / alpha_bar.sqrt()
    if kind == "sample":
        return prediction
    return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * prediction


def _posterior(scheduler, x0: Tensor, x_t: Tensor, t: Tensor):
    """Mean and log variance of q(x_{t-1} | x_t, x0), the log variance clipped at t = 0 (where it is 0)
    to that of t = 1, and log beta_t."""
    alphas_cumprod = scheduler.alphas_cumprod.to(x_t.device, torch.float64)
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    betas = 1 - alphas_cumprod / previous
    variance = betas * (1 - previous) / (1 - alphas_cumprod)
    clipped = torch.log(torch.cat([variance[1:2], variance[1:]]))
    coef_x0 = betas * previous.sqrt() / (1 - alphas_cumprod)
    coef_xt = (1 - previous) * (1 - betas).sqrt() / (1 - alphas_cumprod)
    mean = _at(coef_x0, t, x_t) * x0.float() + _at(coef_xt, t, x_t) * x_t.float()
    log_variance = _at(torch.log(variance.clamp(min=1e-20)), t, x_t)
    return mean, log_variance, _at(clipped, t, x_t), _at(torch.log(betas), t, x_t)


def _at(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    return values.to(like.device)[t].float().view(-1, *[1] * (like.ndim - 1))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """Log-likelihood of images in [-1, 1] quantised to 256 levels under a Gaussian per pixel (the
    outermost bins stretch to ±infinity)."""
    centred = x.float() - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _standard_normal_cdf(inv_std * (centred + 1 / 255))
    cdf_min = _standard_normal_cdf(inv_std * (centred - 1 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _standard_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
