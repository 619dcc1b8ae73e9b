"""Upsampler config, network, sampling, tiling and the model folder."""

from __future__ import annotations

import json

import pytest
import torch

from core.errors import CheckpointError, ConfigError
from upsamplers.config import PRESETS, UpsamplerConfig, UpsamplerModelConfig, settings_for
from upsamplers.io import load_upsampler, save_upsampler
from upsamplers.model import Upsampler, parameter_count, upsample_bicubic
from upsamplers.sample import condition_for, tile_starts, tiled, upsample


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waiting on a shared, contended CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**kw) -> UpsamplerConfig:
    base = dict(stage=1, low_res=8, high_res=32, model=UpsamplerModelConfig(channels=(8, 16), layers_per_block=1),
                sample_steps=3)
    return UpsamplerConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def model() -> Upsampler:
    torch.manual_seed(0)
    # x0 prediction keeps a random network's samples bounded (ε-prediction blows them up to ±1);
    # no residual, so the outputs compared below are the network's alone
    cfg = tiny_config(model=UpsamplerModelConfig(channels=(8, 16), layers_per_block=1, residual=False))
    net = Upsampler(cfg).eval()
    with torch.no_grad():  # the zero-initialised output layer would make every output identical
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def low_res(n: int = 2, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_every_preset_is_valid_and_the_paper_sizes_match():
    for stage, presets in PRESETS.items():
        for name in presets:
            settings = settings_for(stage, name)
            assert settings.upsampler.stage == stage
            assert settings.data.image_size >= settings.upsampler.high_res
    paper1, paper2 = settings_for(1, "paper").upsampler, settings_for(2, "paper").upsampler
    assert (paper1.low_res, paper1.high_res, paper1.noise.schedule, paper1.sample_steps) == (64, 256, "cosine", 27)
    assert (paper2.low_res, paper2.high_res, paper2.noise.schedule, paper2.sample_steps) == (256, 1024, "linear", 15)
    assert (paper1.augment.kind, paper2.augment.kind) == ("blur", "bsr")
    with torch.device("meta"):
        assert 550e6 < parameter_count(Upsampler(paper1)) < 850e6
        assert 200e6 < parameter_count(Upsampler(paper2)) < 400e6


def test_bad_presets_and_values_are_config_errors():
    with pytest.raises(ConfigError, match="stage"):
        settings_for(3, "demo")
    with pytest.raises(ConfigError, match="choose one of"):
        settings_for(1, "huge")
    with pytest.raises(ConfigError, match="multiple"):
        settings_for(1, "demo", ["upsampler.high_res=100"])
    with pytest.raises(ConfigError, match="unknown key"):
        settings_for(1, "demo", ["upsampler.widths=3"])
    with pytest.raises(ConfigError, match="crop"):
        settings_for(1, "demo", ["crop=30"])
    with pytest.raises(ConfigError, match="residual"):
        UpsamplerConfig.parse({"noise": {"prediction": "epsilon"}})
    assert UpsamplerConfig.parse({"noise": {"prediction": "epsilon"}, "model": {"residual": False}}).model.norm == "pixel"
    with pytest.raises(ConfigError, match="norm_groups"):
        UpsamplerConfig.parse({"model": {"channels": [24, 48], "norm": "group", "norm_groups": 32}})


def test_crop_training_and_full_size_inference_shapes(model):
    t, level = torch.tensor([10, 500]), torch.tensor([0.0, 0.5])
    crop = torch.randn(2, 3, 16, 16)
    assert model(crop, t, crop, level).shape == (2, 3, 16, 16)
    out = upsample(model, low_res(2, 8, 12), steps=2)
    assert out.shape == (2, 3, 32, 48)
    assert out.min() >= -1 and out.max() <= 1


def test_inference_condition_is_the_bicubic_input_plus_seeded_noise(model):
    x = low_res(2)
    clean = condition_for(model, x, 0.0, [0, 1])
    assert torch.equal(clean, upsample_bicubic(x, (32, 32)))
    noisy = condition_for(model, x, 0.5, [0, 1])
    assert torch.equal(noisy, condition_for(model, x, 0.5, [0, 1]))
    assert torch.equal(noisy[1:], condition_for(model, x[1:], 0.5, [1]))
    assert 0 < (noisy - clean).abs().mean() < 0.1


def test_seeds_make_samples_batch_independent(model):
    x = low_res(2)
    both = upsample(model, x, steps=2, seeds=[3, 4])
    alone = upsample(model, x[1:], steps=2, seeds=[4])
    assert torch.allclose(both[1:], alone, atol=1e-5)
    assert not torch.allclose(both[1:], upsample(model, x[1:], steps=2, seeds=[5]))


def test_tile_origins_cover_the_image():
    assert tile_starts(64, 32, 8) == [0, 24, 32]
    assert tile_starts(32, 32, 8) == [0]
    assert tile_starts(20, 32, 8) == [0]


def test_tile_blending_is_seamless_and_exact_for_a_local_network():
    conv = torch.nn.Conv2d(6, 3, 3, padding=1)  # receptive field radius 1, below the zero-weight margin

    def local(x, t, cond):
        return conv(torch.cat([x, cond], 1))

    x, cond = torch.randn(1, 3, 96, 80), torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        assert torch.allclose(tiled(local, 32, 16)(x, None, cond), local(x, None, cond), atol=1e-6)
    ones = tiled(lambda x, t, cond: torch.ones_like(x), 32, 8)(x, None, cond)
    assert torch.allclose(ones, torch.ones_like(x), atol=1e-6)


def test_tiled_inference_equals_whole_image_within_tolerance(model):
    x = low_res(1, 32, 32)  # output 128×128: 3×3 tiles of 64 overlapping by 32
    whole = upsample(model, x, steps=3, tile=0)
    tiles = upsample(model, x, steps=3, tile=64, overlap=32)
    scale = whole.abs().mean()
    assert (tiles - whole).abs().mean() < 0.01 * scale
    assert (tiles - whole).abs().max() < 0.2 * scale


def test_save_load_round_trip_is_bit_identical(model, tmp_path):
    folder = save_upsampler(tmp_path / "up", model)
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "upsampler_config.json"]
    loaded = load_upsampler(folder)
    assert loaded.cfg == model.cfg
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = low_res(1)
    assert torch.equal(upsample(model, x, steps=2), upsample(str(folder), x, steps=2))


def test_bad_folders_are_checkpoint_errors(model, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_upsampler(tmp_path / "missing")
    folder = save_upsampler(tmp_path / "up", model)
    config = folder / "upsampler_config.json"
    config.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_upsampler(folder)
    config.write_text(json.dumps({**model.cfg.model_dump(mode="json"), "high_res": 33}))
    with pytest.raises(CheckpointError, match="not a valid upsampler config"):
        load_upsampler(folder)
    other = tiny_config(model=UpsamplerModelConfig(channels=(8, 24), layers_per_block=1))
    config.write_text(other.to_json())
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_upsampler(folder)
    (folder / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_upsampler(folder)


def test_bad_inputs_are_config_errors(model):
    with pytest.raises(ConfigError, match=r"\[B, 3, h, w\]"):
        upsample(model, torch.zeros(3, 8, 8))
    with pytest.raises(ConfigError, match=r"lie in \[-1, 1\]"):
        upsample(model, torch.full((1, 3, 8, 8), 200.0))
    deep = Upsampler(tiny_config(model=UpsamplerModelConfig(channels=(8, 8, 8, 8), layers_per_block=1)))
    with pytest.raises(ConfigError, match="multiples of 8"):
        upsample(deep, torch.zeros(1, 3, 8, 9))
    with pytest.raises(ConfigError, match="seeds"):
        upsample(model, low_res(2), seeds=[1])
    with pytest.raises(ConfigError, match="aug_level"):
        upsample(model, low_res(1), aug_level=2.0)
    with pytest.raises(ConfigError, match="multiples"):
        upsample(model, low_res(1), tile=31)
    with pytest.raises(ConfigError, match="sampling steps"):
        upsample(model, low_res(1), steps=5000)
