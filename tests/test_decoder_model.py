"""The decoder network: config validation, conditioning layout, guidance dropout."""

from __future__ import annotations

import pytest
import torch

from core.config import apply_overrides
from core.errors import ConfigError
from decoder.config import PRESETS, DecoderConfig, settings_for
from decoder.model import Decoder
from decoder.testing import (
    DIM,
    SIZE,
    TOKENS,
    WIDTH,
    fake_caption,
    fake_image_embeds,
    tiny_config,
    tiny_decoder,
)
from decoder.train import make_loss


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def inputs(batch: int = 3, seed: int = 0):
    text = fake_caption(batch, seed)
    x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    t = torch.tensor([5, 50, 99][:batch])
    return x, t, {"image_embeds": fake_image_embeds(batch, seed + 1), "text_embeds": text.embeds,
                  "text_tokens": text.tokens, "text_mask": text.mask}


def test_presets_validate_and_paper_matches_the_notes():
    for name in PRESETS:
        assert settings_for(name).decoder.image_size in (16, 32, 64)
    paper = settings_for("paper").decoder
    assert paper.image_size == 64 and paper.unet.channels == 512 and paper.unet.channel_mult == (1, 2, 3, 4)
    assert paper.unet.attention_resolutions == (32, 16, 8) and paper.noise.schedule == "cosine"
    assert (paper.image_dropout, paper.text_dropout) == (0.1, 0.5)
    assert DecoderConfig().noise.prediction == "epsilon"


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="attention_resolutions"):
        DecoderConfig.parse({"image_size": 64, "unet": {"attention_resolutions": [12]}})
    with pytest.raises(ConfigError, match="divisible"):
        DecoderConfig.parse({"image_size": 36})
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(settings_for("demo"), ["decoder.unet.widht=3"])
    with pytest.raises(ConfigError):
        settings_for("huge")
    with pytest.raises(ConfigError, match="embed_dim"):
        Decoder(DecoderConfig())


def test_conditioning_shapes():
    decoder = tiny_decoder()
    x, t, cond = inputs()
    context, time_embeds, mask = decoder.condition(**cond)
    cfg = decoder.cfg
    assert context.shape == (3, cfg.extra_tokens + TOKENS, cfg.unet.context_dim)
    assert time_embeds.shape == (3, cfg.unet.channels * 4)
    assert mask.shape == (3, cfg.extra_tokens + TOKENS) and mask[:, : cfg.extra_tokens].all()
    assert torch.equal(mask[:, cfg.extra_tokens:], cond["text_mask"])
    assert decoder(x, t, **cond).shape == x.shape
    with pytest.raises(ConfigError, match="text_tokens"):
        decoder(x, t, **{**cond, "text_tokens": torch.zeros(3, TOKENS, WIDTH + 1)})


def test_extra_tokens_use_karlo_interleaved_layout():
    decoder = tiny_decoder()
    _, _, cond = inputs()
    context, _, _ = decoder.condition(**cond)
    proj = decoder.text_proj.clip_extra_context_tokens_proj(cond["image_embeds"] * DIM**0.5)
    for k in range(decoder.cfg.extra_tokens):
        assert torch.allclose(context[:, k], proj[:, k::decoder.cfg.extra_tokens], atol=1e-6)


def test_image_embedding_reaches_attention_through_the_extra_tokens():
    decoder = tiny_decoder()
    with torch.no_grad():  # cut the time-embedding path: only the context tokens carry z_i now
        decoder.text_proj.clip_image_embeddings_project_to_time_embeddings.weight.zero_()
    x, t, cond = inputs()
    other = {**cond, "image_embeds": fake_image_embeds(3, seed=9)}
    with torch.no_grad():
        assert not torch.allclose(decoder(x, t, **cond), decoder(x, t, **other), atol=1e-5)
        decoder.text_proj.clip_extra_context_tokens_proj.weight.zero_()
        assert torch.allclose(decoder(x, t, **cond), decoder(x, t, **other), atol=1e-6)


def test_drop_conditions_use_null_embedding_and_mask_the_caption():
    decoder = tiny_decoder()
    _, _, cond = inputs()
    dropped = decoder.drop_conditions(**cond, drop_image=torch.tensor([True, False, False]),
                                      drop_text=torch.tensor([False, True, False]))
    null = decoder.null_image_embed / DIM**0.5
    assert torch.allclose(dropped["image_embeds"][0], null) and torch.equal(dropped["image_embeds"][1:], cond["image_embeds"][1:])
    assert not dropped["text_mask"][1].any() and torch.equal(dropped["text_mask"][[0, 2]], cond["text_mask"][[0, 2]])
    assert (dropped["text_embeds"][1] == 0).all() and torch.equal(dropped["text_tokens"][2], cond["text_tokens"][2])
    uncond = decoder.unconditional(2, TOKENS, "cpu")
    assert torch.allclose(uncond["image_embeds"], null.expand(2, DIM)) and not uncond["text_mask"].any()


def test_null_embedding_is_trained_through_dropout():
    decoder = tiny_decoder()
    x, t, cond = inputs()
    out = decoder(x, t, **cond, drop_image=torch.tensor([True, False, False]))
    out.square().mean().backward()
    assert decoder.null_image_embed.grad is not None and decoder.null_image_embed.grad.abs().sum() > 0


@pytest.mark.parametrize(("p_image", "p_text"), [(0.1, 0.5), (0.3, 0.0)])
def test_guidance_dropout_rates_are_independent(p_image, p_text):
    settings = settings_for("smoke").override(decoder=tiny_config(image_dropout=p_image, text_dropout=p_text),
                                              channels_last=False)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, drop_image, drop_text, **cond):
            seen.append((drop_image, drop_text))
            return x

    loss = make_loss(settings)
    _, _, cond = inputs(1)
    batch = {k: v.expand(2000, *v.shape[1:]) for k, v in cond.items()}
    batch["images"] = torch.zeros(2000, 3, 4, 4, dtype=torch.uint8)
    torch.manual_seed(0)
    loss(Spy(), batch)
    drop_image, drop_text = seen[0]
    assert abs(drop_image.float().mean() - p_image) < 0.03
    assert abs(drop_text.float().mean() - p_text) < 0.03
    assert abs((drop_image & drop_text).float().mean() - p_image * p_text) < 0.03


def test_coordinate_channels_are_an_input_not_a_weight():
    decoder = tiny_decoder(coord_channels=True)
    x, t, cond = inputs()
    assert decoder.unet.conv_in.in_channels == 5 and decoder(x, t, **cond).shape == x.shape
    assert "coords" not in decoder.state_dict()
    assert torch.equal(decoder.coords[0, 0, 0], torch.linspace(-1, 1, SIZE))  # x grows to the right
    assert torch.equal(decoder.coords[0, 1, :, 0], torch.linspace(-1, 1, SIZE))  # y grows downwards


def test_patch_size_runs_the_unet_on_a_smaller_grid():
    decoder = tiny_decoder(patch_size=2, coord_channels=True,
                           unet=tiny_config().unet.override(attention_resolutions=(4,)))
    x, t, cond = inputs()
    seen = {}
    decoder.unet.conv_in.register_forward_hook(lambda m, args, out: seen.update(shape=tuple(args[0].shape)))
    out = decoder(x, t, **cond)
    assert out.shape == x.shape
    assert seen["shape"] == (3, 5 * 4, SIZE // 2, SIZE // 2)  # 2×2 patches of 3 colours + 2 coordinates
    assert decoder.unet.conv_out.out_channels == 12
    # one image's pixel reaches that image's output and no other's
    x2 = x.clone()
    x2[0, :, 0, 0] += 1.0
    with torch.no_grad():
        delta = (decoder(x2, t, **cond) - decoder(x, t, **cond)).abs()
    assert delta[0].sum() > 0 and delta[1:].sum() == 0
    with pytest.raises(ConfigError, match="patch_size"):
        tiny_config(patch_size=3)
    with pytest.raises(ConfigError, match="attention_resolutions"):
        tiny_config(patch_size=2, unet=tiny_config().unet.override(attention_resolutions=(16,)))  # grid is 8 → 4


def test_the_draft_is_an_input_and_with_draft_residual_the_base_of_the_prediction():
    decoder = tiny_decoder(draft_width=32, patch_size=2, unet=tiny_config().unet.override(attention_resolutions=(4,)))
    x, t, cond = inputs()
    seen = {}
    decoder.unet.conv_in.register_forward_hook(lambda m, args, out: seen.update(input=args[0]))
    with torch.no_grad():
        out = decoder(x, t, **cond)
        draft = decoder.draw_draft(cond["image_embeds"], cond["text_embeds"])
    assert out.shape == x.shape and draft.shape == x.shape
    assert seen["input"].shape[1] == 3 * 4 + 3 * 4  # 2×2 patches of the noisy image, then of the draft
    assert torch.equal(seen["input"][:, 12:], torch.nn.functional.pixel_unshuffle(draft, 2))
    # the draft reads both embeddings
    with torch.no_grad():
        other_text = decoder.draw_draft(cond["image_embeds"], torch.zeros_like(cond["text_embeds"]))
    assert not torch.allclose(draft, other_text)

    residual = tiny_decoder(draft_width=32, draft_residual=True, noise=tiny_config().noise.override(prediction="sample"))
    plain = tiny_decoder(draft_width=32, noise=tiny_config().noise.override(prediction="sample"))
    with torch.no_grad():
        gap = residual(x, t, **cond) - plain(x, t, **cond)  # same seed, same weights: the gap is the draft
        assert torch.allclose(gap, residual.draw_draft(cond["image_embeds"], cond["text_embeds"]), atol=1e-6)
    with pytest.raises(ConfigError, match="draft_residual"):
        tiny_config(draft_residual=True)  # v-prediction
    with pytest.raises(ConfigError, match="draft_residual"):
        tiny_config(draft_residual=True, noise=tiny_config().noise.override(prediction="sample"))  # no draft


def test_a_new_refiner_leaves_the_unet_output_and_then_learns_a_correction():
    x, t, cond = inputs()
    plain = tiny_decoder(draft_width=32)
    refined = tiny_decoder(draft_width=32, refine_width=8, refine_layers=3)  # built after the rest: same weights
    seen = {}
    refined.refiner.conv_in.register_forward_hook(lambda m, args, out: seen.update(input=args[0]))
    with torch.no_grad():
        assert torch.equal(refined(x, t, **cond), plain(x, t, **cond))  # zero-initialised output layer
    assert seen["input"].shape == (3, 3 + 3 + 3, SIZE, SIZE)  # noisy image, U-Net output, draft
    assert torch.equal(seen["input"][:, :3], x)
    # it trains: one step moves the output, and the gradient reaches the layers before the zero one
    optimizer = torch.optim.SGD(refined.refiner.parameters(), lr=0.1)
    refined(x, t, **cond).pow(2).mean().backward()
    assert refined.refiner.conv_out.weight.grad.abs().sum() > 0
    optimizer.step()
    optimizer.zero_grad()
    refined(x, t, **cond).pow(2).mean().backward()
    assert refined.refiner.conv_in.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert not torch.allclose(refined(x, t, **cond), plain(x, t, **cond))
        # the timestep reaches it
        changed = refined(x, t.flip(0), **cond) - plain(x, t.flip(0), **cond)
        assert not torch.allclose(changed, refined(x, t, **cond) - plain(x, t, **cond))
    assert sum(p.numel() for p in refined.refiner.parameters()) > 0
    with pytest.raises(ConfigError, match="refine_layers"):
        tiny_config(refine_width=8, refine_layers=1)
