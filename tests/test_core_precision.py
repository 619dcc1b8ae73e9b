"""Precision choice (fp32, bf16, auto), bf16 inference copies, auto in the training loop, and bf16 samples
that stay within 35 dB of fp32 ones from the same seeds."""

from __future__ import annotations

import logging
import math
import time

import pytest
import torch

from core import precision
from core.errors import ConfigError
from core.memory import keep_freed_memory
from core.trainer import TrainConfig, fit
from decoder.sample import decode
from decoder.testing import fake_caption, fake_image_embeds, tiny_decoder


@pytest.fixture(autouse=True)
def fresh_choices():
    precision.forget_choices()
    yield
    precision.forget_choices()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)  # images in [-1, 1]


def test_given_precisions_pass_through_and_bad_names_fail():
    never = lambda p: pytest.fail("no probe for a given precision")  # noqa: E731
    assert precision.resolve("fp32", "x", "cpu", never) == "fp32"
    assert precision.resolve("bf16", "x", "cpu", never) == "bf16"
    with pytest.raises(ConfigError, match="precision must be one of"):
        precision.resolve("fp16", "x", "cpu", never)


def test_auto_takes_fp32_without_bf16_units(monkeypatch, caplog):
    monkeypatch.setattr(precision, "has_bf16_units", lambda device: False)
    with caplog.at_level(logging.INFO, logger="core.precision"):
        assert precision.resolve("auto", "stage", "cpu", lambda p: pytest.fail("no probe")) == "fp32"
    assert "no bf16 units" in caplog.text


@pytest.mark.parametrize("speedup, reason", [(0.55, "bf16 matmuls run at 0.55x"), (3.0, None)])
def test_auto_takes_fp32_without_probing_where_bf16_matmuls_are_slower(monkeypatch, caplog, speedup, reason):
    monkeypatch.setattr(precision, "has_bf16_units", lambda device: True)
    monkeypatch.setattr(precision, "bf16_kernel_speedup", lambda: speedup)
    why = precision.bf16_cannot_pay("cpu")
    assert why is None if reason is None else reason in why
    if reason is not None:
        with caplog.at_level(logging.INFO, logger="core.precision"):
            assert precision.resolve("auto", "stage", "cpu", lambda p: pytest.fail("no probe")) == "fp32"
        assert reason in caplog.text


def test_the_kernel_speedup_is_measured_once_and_positive():
    first = precision.bf16_kernel_speedup()
    assert 0 < first < 100 and precision.bf16_kernel_speedup() == first


@pytest.mark.parametrize("slow, expected", [("fp32", "bf16"), ("bf16", "fp32")])
def test_auto_times_both_keeps_the_faster_logs_and_remembers(monkeypatch, caplog, slow, expected):
    monkeypatch.setattr(precision, "bf16_cannot_pay", lambda device: None)
    calls = []

    def probe(p):
        calls.append(p)
        time.sleep(0.02 if p == slow else 0.0)

    with caplog.at_level(logging.INFO, logger="core.precision"):
        assert precision.resolve("auto", "stage", "cpu", probe, key=1) == expected
        assert precision.resolve("auto", "stage", "cpu", probe, key=1) == expected
    assert set(calls) == {"fp32", "bf16"} and len(calls) == 6  # one warm-up and two timed rounds, once
    assert f"stage precision auto -> {expected}" in caplog.text
    (choice, seconds), = precision.choices().values()
    assert choice == expected and seconds[slow] > seconds[expected]


def test_inference_copy_is_made_once_and_follows_the_weights():
    model = torch.nn.Linear(4, 4)
    assert precision.inference_copy(model, "fp32") is model
    copy = precision.inference_copy(model, "bf16")
    assert copy.weight.dtype == torch.bfloat16 and precision.inference_copy(model, "bf16") is copy
    with torch.no_grad():
        model.weight.add_(1.0)
    fresh = precision.inference_copy(model, "bf16")
    assert fresh is not copy and torch.allclose(fresh.weight.float(), model.weight, atol=0.05)


def test_keep_freed_memory_answers():
    assert keep_freed_memory() in (True, False)


def test_bf16_decoder_samples_within_35_db_of_fp32():
    decoder = tiny_decoder()
    text, embeds = fake_caption(4), fake_image_embeds(4)
    out = {p: decode(decoder, embeds, text, [0, 1, 2, 3], steps=5, guidance=2.0, precision=p) for p in ("fp32", "bf16")}
    assert psnr(out["bf16"], out["fp32"]) >= 35
    assert decode(decoder, embeds, text, [0, 1, 2, 3], steps=5, guidance=2.0, precision="auto").shape == (4, 3, 16, 16)


def test_bf16_upsampler_samples_within_35_db_of_fp32():
    from upsamplers.config import UpsamplerConfig, UpsamplerModelConfig
    from upsamplers.model import Upsampler
    from upsamplers.sample import upsample

    torch.manual_seed(0)
    model = Upsampler(UpsamplerConfig(low_res=8, high_res=32, sample_steps=3,
                                      model=UpsamplerModelConfig(channels=(8, 16), layers_per_block=1))).eval()
    torch.nn.init.normal_(model.unet.conv_out.weight, std=0.05)  # not the bicubic image alone
    low = torch.rand(2, 3, 8, 8) * 2 - 1
    out = {p: upsample(model, low, seeds=[3, 4], precision=p) for p in ("fp32", "bf16")}
    assert (out["fp32"] - upsample(model, low, seeds=[3, 4])).abs().max() == 0
    assert 35 <= psnr(out["bf16"], out["fp32"]) < math.inf


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def batches(epoch: int, rank: int, world: int):
    g = torch.Generator().manual_seed(epoch)
    x = torch.randn(32, 4, generator=g)
    for i in range(0, 32, 8):
        yield x[i:i + 8], x[i:i + 8].sum(1, keepdim=True)


def mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x).float(), y)


def test_auto_training_probes_once_logs_and_resumes_in_the_same_precision(tmp_path, monkeypatch, caplog):
    torch.manual_seed(0)
    cfg = TrainConfig(steps=4, batch_size=8, mixed_precision="auto", log_every=2, checkpoint_every=2)
    with caplog.at_level(logging.INFO):
        first = fit(Tiny(), mse, batches, cfg, tmp_path)
    assert first.precision in ("no", "bf16") and "trains in" in caplog.text
    monkeypatch.setattr("core.trainer.resolve", lambda *a, **k: pytest.fail("a resumed run must not probe again"))
    resumed = fit(Tiny(), mse, batches, cfg.override(steps=6), tmp_path)
    assert resumed.precision == first.precision and resumed.step == 6


def test_the_probe_leaves_weights_and_batch_norm_statistics_alone(monkeypatch):
    from core.trainer import _Stream, make_accelerator, training_autocast

    monkeypatch.setattr(precision, "bf16_cannot_pay", lambda device: None)
    torch.manual_seed(0)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stream = _Stream(batches, 0, 1)
    cfg = TrainConfig(steps=1, batch_size=8, mixed_precision="auto")
    _, chosen = training_autocast(model, mse, stream, cfg, make_accelerator("auto"), "tiny")
    assert chosen in ("no", "bf16")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert (stream.epoch, stream.offset) == (0, 0)
    first = stream.next()  # the peeked batch is still the first one
    assert torch.equal(first[0], next(iter(batches(0, 0, 1)))[0]) and stream.offset == 1
