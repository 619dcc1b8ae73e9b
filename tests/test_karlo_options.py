"""The stage options Karlo's layout needs, on tiny networks: learned variance (its loss and sampler),
CLIP's empty caption as the null caption, ResNet-block super-resolution with a last-step U-Net, raw
CLIP embeddings and self-contained CLIP folders."""

from __future__ import annotations

import json
import math

import pytest
import torch

from core.diffusion import NoiseConfig, guided, sampling_scheduler, training_scheduler
from core.errors import ConfigError
from core.vlb import vlb_loss
from decoder.sample import decode
from decoder.testing import fake_caption, fake_image_embeds, tiny_decoder
from decoder.train import make_loss
from upsamplers.config import UpsamplerConfig, UpsamplerModelConfig
from upsamplers.model import Upsampler
from upsamplers.sample import upsample

EPS_NOISE = NoiseConfig(prediction="epsilon", train_steps=100)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_guidance_leaves_the_variance_channels_to_the_conditional_branch():
    model = lambda x, t, c: c.expand_as(x)  # noqa: E731
    x = torch.zeros(1, 6, 2, 2)
    out = guided(model, {"c": torch.ones(1, 6, 1, 1)}, {"c": torch.zeros(1, 6, 1, 1)}, 3.0, guided_channels=3)(
        x, torch.zeros(1, dtype=torch.long))
    assert out[:, :3].eq(3).all() and out[:, 3:].eq(1).all()


def test_the_bound_vanishes_for_the_true_posterior_and_trains_only_the_variance():
    scheduler = training_scheduler(EPS_NOISE)
    x0, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 3, 8, 8)
    t = torch.tensor([1, 10, 50, 99])
    x_t = scheduler.add_noise(x0, noise, t)
    exact = vlb_loss(scheduler, x0, x_t, t, noise, -torch.ones_like(x0))
    assert exact.abs().max() < 1e-4  # the true ε and the posterior's variance: no KL left
    prediction = torch.randn_like(x0, requires_grad=True)
    v = torch.zeros_like(x0, requires_grad=True)
    loss = vlb_loss(scheduler, x0, x_t, torch.tensor([0, 5, 50, 99]), prediction, v).mean()
    loss.backward()
    assert math.isfinite(loss.item()) and prediction.grad is None and v.grad.abs().sum() > 0


def test_a_learned_variance_decoder_trains_and_samples_with_every_sampler():
    from decoder.config import settings_for

    decoder = tiny_decoder(learned_variance=True, noise=EPS_NOISE).train()
    settings = settings_for("smoke").override(decoder=decoder.cfg)
    batch = {"images": torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8), "image_embeds": fake_image_embeds(2)}
    caption = fake_caption(2)
    batch |= {"text_embeds": caption.embeds, "text_tokens": caption.tokens, "text_mask": caption.mask}
    loss = make_loss(settings)(decoder, batch)
    loss.backward()
    assert math.isfinite(loss.item()) and decoder.unet.conv_out.weight.grad.abs().sum() > 0
    decoder.eval()
    for sampler in ("unclip", "ddim", "dpmpp"):
        images = decode(decoder, fake_image_embeds(2), caption, [0, 1], steps=3, sampler=sampler, guidance=2.0)
        assert images.shape == (2, 3, 16, 16) and images.isfinite().all(), sampler


def test_the_empty_caption_is_the_decoders_unconditional_caption():
    decoder = tiny_decoder(null_text="empty_caption", context_length=6)
    empty = fake_caption(1, seed=5)
    decoder.set_empty_caption(empty.embeds[0], empty.tokens[0], empty.mask[0])
    uncond = decoder.unconditional(2, 6, "cpu")
    assert torch.equal(uncond["text_tokens"][1], empty.tokens[0]) and torch.equal(uncond["text_mask"][0], empty.mask[0])
    caption = fake_caption(2)
    dropped = decoder.drop_conditions(fake_image_embeds(2), caption.embeds, caption.tokens, caption.mask,
                                      torch.tensor([False, False]), torch.tensor([True, False]))
    assert torch.equal(dropped["text_embeds"][0], empty.embeds[0]) and torch.equal(dropped["text_tokens"][1],
                                                                                   caption.tokens[1])


def karlo_like(**model) -> UpsamplerConfig:
    return UpsamplerConfig(stage=1, low_res=8, high_res=16, noise=EPS_NOISE.override(clip_x0=1.0), sampler="unclip",
                           sample_steps=3, aug_level=0.0, condition_resize="bicubic_antialias",
                           model=UpsamplerModelConfig(channels=(8, 16), layers_per_block=1, norm="group", norm_groups=4,
                                                      level_conditioning=False, residual=False, resample="resnet",
                                                      time_scale_shift=False, **model))


def test_karlos_super_resolution_builds_from_config_and_its_last_step_is_the_second_unet():
    model = Upsampler(karlo_like(final_step_unet=True, learned_variance=True)).eval()
    assert type(model.unet.down_blocks[0]).__name__ == "ResnetDownsampleBlock2D"
    assert model.unet.config.resnet_time_scale_shift == "default" and model.unet.conv_out.out_channels == 6
    calls = []
    model.unet.register_forward_hook(lambda *_: calls.append("first"))
    model.final_unet.register_forward_hook(lambda *_: calls.append("last"))
    out = upsample(model, torch.rand(1, 3, 8, 8) * 2 - 1)
    assert out.shape == (1, 3, 16, 16) and calls == ["first", "first", "last"]


def test_new_models_refuse_parts_that_only_come_with_converted_weights():
    from prior.config import PriorConfig
    from prior.train import PriorTrainSettings, build_prior
    from upsamplers.config import settings_for
    from upsamplers.train import build_upsampler

    settings = settings_for(1, "smoke")
    with pytest.raises(ConfigError, match="final_step_unet"):
        build_upsampler(settings.override(upsampler=karlo_like(final_step_unet=True).override(low_res=16, high_res=64)))
    prior = PriorTrainSettings(prior=PriorConfig(null_caption="empty_caption"), train={"steps": 1})
    with pytest.raises(ConfigError, match="empty caption"):
        build_prior(prior, shards=None)


def test_the_unclip_sampler_takes_what_karlos_scheduler_can():
    assert sampling_scheduler(EPS_NOISE, "unclip", 5).timesteps.tolist() == [99, 74, 50, 25, 0]
    for noise, steps in ((EPS_NOISE.override(prediction="v_prediction"), 5), (EPS_NOISE.override(schedule="linear"), 5),
                         (EPS_NOISE, 1)):
        with pytest.raises(ValueError):
            sampling_scheduler(noise, "unclip", steps)


def test_raw_embeddings_are_a_new_clip_identity_and_unit_ones_keep_theirs(tmp_path):
    from clip.spec import ClipSpec

    base = {"backend": "hf", "model": ".", "weights_sha256": "0" * 64, "embed_dim": 8, "image_size": None,
            "context_length": 4, "text_width": 8}
    (tmp_path / "clip_spec.json").write_text(json.dumps(base))
    unit = ClipSpec.load(tmp_path)
    assert unit.model == str(tmp_path.resolve()) and not unit.has_image_tower  # relative to its folder
    assert "normalise" not in unit.identity()
    assert unit.override(normalise=False).fingerprint() != unit.fingerprint()
