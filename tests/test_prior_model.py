"""The prior network, its configuration, guidance dropout and one-batch overfitting."""

from __future__ import annotations

import pytest
import torch

from core.config import apply_overrides
from core.errors import ConfigError
from core.trainer import TrainConfig, fit, tensor_batches
from prior.config import PRIOR_PRESETS, PriorConfig
from prior.model import DiffusionPrior, condition_dropout
from prior.testing import DIM, LENGTH, WIDTH, fake_pairs, tiny_config, tiny_prior
from prior.train import PRESETS, make_loss, settings_for, training_tensors


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run far faster on one thread, above all on a shared, contended CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_shapes_dtypes_and_diffusers_layout():
    prior = tiny_prior()
    pairs = fake_pairs(5)
    x = torch.randn(5, DIM)
    out = prior(x, torch.randint(0, 1000, (5,)), pairs["text_embeds"], pairs["text_tokens"], pairs["text_mask"])
    assert out.shape == (5, DIM) and out.dtype == torch.float32 and torch.isfinite(out).all()
    keys = prior.state_dict().keys()
    # diffusers' PriorTransformer names under `prior.`, the normalisation where Karlo keeps it
    for key in ("prior.positional_embedding", "prior.prd_embedding", "prior.clip_mean", "prior.clip_std",
                "prior.encoder_hidden_states_proj.weight", "prior.transformer_blocks.0.attn1.to_q.weight"):
        assert key in keys
    assert prior.prior.positional_embedding.shape == (1, LENGTH + 4, 2 * 16)
    assert not prior.prior.clip_std.requires_grad


def test_token_width_other_than_embed_dim():
    prior = DiffusionPrior(tiny_config(text_width=48))
    prior.set_stats(torch.zeros(DIM), torch.ones(DIM))
    pairs = fake_pairs(2, width=48)
    out = prior(torch.randn(2, DIM), torch.tensor([3, 9]), pairs["text_embeds"], pairs["text_tokens"], pairs["text_mask"])
    assert out.shape == (2, DIM)


def test_masked_caption_tokens_are_ignored_and_the_mask_is_causal():
    prior = tiny_prior()
    pairs = fake_pairs(3)
    x, t = torch.randn(3, DIM), torch.tensor([10, 500, 990])
    mask = pairs["text_mask"].clone()
    mask[:, 5:] = False
    base = prior(x, t, pairs["text_embeds"], pairs["text_tokens"], mask)
    tokens = pairs["text_tokens"].clone()
    tokens[:, 5:] += 100.0
    assert torch.allclose(base, prior(x, t, pairs["text_embeds"], tokens, mask), atol=1e-5)
    tokens[:, 2] += 1.0
    assert not torch.allclose(base, prior(x, t, pairs["text_embeds"], tokens, mask), atol=1e-4)


def test_dropped_rows_see_exactly_the_null_caption():
    prior = tiny_prior()
    with torch.no_grad():
        prior.null_tokens.normal_()
    pairs = fake_pairs(4)
    x, t = torch.randn(4, DIM), torch.tensor([1, 2, 3, 4])
    drop = torch.tensor([True, False, True, False])
    out = prior(x, t, pairs["text_embeds"], pairs["text_tokens"], pairs["text_mask"], drop=drop)
    null = prior.null_condition(4)
    uncond = prior(x, t, **null)
    cond = prior(x, t, pairs["text_embeds"], pairs["text_tokens"], pairs["text_mask"])
    assert torch.allclose(out[drop], uncond[drop], atol=1e-6)
    assert torch.allclose(out[~drop], cond[~drop], atol=1e-6)


def test_condition_dropout_rate():
    torch.manual_seed(0)
    assert abs(condition_dropout(200_000, 0.1).float().mean().item() - 0.1) < 0.003
    assert not condition_dropout(1000, 0.0).any()


def test_training_loss_drops_captions_at_the_configured_rate():
    seen = []

    def spy(x, t, text_embeds, tokens, mask, drop):
        seen.append(drop)
        return x

    pairs = fake_pairs(64)
    batch = {"x0": pairs["image_embeds"], "text_embeds": pairs["text_embeds"], "tokens": pairs["text_tokens"],
             "mask": pairs["text_mask"]}
    loss = make_loss(tiny_config().noise, cond_drop=0.25)
    torch.manual_seed(0)
    for _ in range(200):
        loss(spy, batch)
    assert abs(torch.cat(seen).float().mean().item() - 0.25) < 0.02


def test_overfitting_one_batch_drives_the_loss_near_zero(tmp_path):
    prior = tiny_prior(cond_drop=0.0)
    data = training_tensors(prior, fake_pairs(8, seed=3))
    loss = make_loss(prior.config.noise, 0.0)
    batch = next(iter(tensor_batches(data, 8, seed=0)(0, 0, 1)))

    def mean_loss(model):  # over 20 fixed draws of timesteps and noise
        torch.manual_seed(1)
        with torch.no_grad():
            return sum(loss(model.eval(), batch).item() for _ in range(20)) / 20

    before = mean_loss(prior)
    cfg = TrainConfig(steps=60, batch_size=8, lr=1e-2, warmup_steps=5, ema_decay=0.9, log_every=20, grad_clip=None)
    result = fit(prior, loss, tensor_batches(data, 8, seed=0), cfg, tmp_path)
    after = mean_loss(result.model)
    assert after < 0.01 * before and after < 0.02, (before, after)


def test_config_validation_is_clear():
    with pytest.raises(ConfigError, match="cond_drop"):
        PriorConfig.parse({"cond_drop": 1.5})
    with pytest.raises(ConfigError, match="heads"):
        PriorConfig.parse({"heads": 0})
    with pytest.raises(ConfigError, match="nope"):
        PriorConfig.parse({"nope": 1})
    with pytest.raises(ConfigError, match="embed_scale"):
        PriorConfig.parse({"embed_scale": 17.2})
    with pytest.raises(ConfigError, match="for_clip"):
        DiffusionPrior(PRIOR_PRESETS["smoke"])
    with pytest.raises(ConfigError, match="embed_dim=64 but the CLIP"):
        PriorConfig(embed_dim=64).for_clip(32, 16, 32)
    with pytest.raises(ConfigError, match="unknown prior training preset"):
        settings_for("huge")
    with pytest.raises(ConfigError, match="unknown key"):
        settings_for("smoke", ["prior.width=3"])
    assert settings_for("demo", ["prior.layers=2"]).prior.layers == 2
    assert PRESETS["paper"].prior.width == 2048 and PRESETS["paper"].prior.layers == 24
    assert PRESETS["demo"].train.mixed_precision == "no"
    assert apply_overrides(PRESETS["demo"], ["prior.noise.prediction=sample"]).prior.noise.train_steps == 1000


def test_normalisation_rules():
    prior = tiny_prior()
    z = torch.nn.functional.normalize(torch.randn(4, DIM), dim=-1)
    assert torch.allclose(prior.denormalise(prior.normalise(z)), z, atol=1e-6)
    scaled = tiny_prior(normalise="l2_scale", embed_scale=17.2)
    assert torch.allclose(scaled.normalise(z), z * 17.2, atol=1e-5)
    unset = DiffusionPrior(tiny_config())
    with pytest.raises(ConfigError, match="not set"):
        unset.normalise(z)
    with pytest.raises(ConfigError, match="positive"):
        unset.set_stats(torch.zeros(DIM), torch.zeros(DIM))
    assert WIDTH == DIM  # the fakes use the common case of CLIP text width == embed dim


def test_a_diffusers_prior_state_dict_loads_under_the_prior_prefix():
    """Karlo's prior is a diffusers PriorTransformer with these options: its weights (stats included)
    load as `prior.*`; only the learned null caption is ours."""
    from diffusers import PriorTransformer

    from core.checkpoint import load_into

    karlo_like = PriorTransformer(num_attention_heads=2, attention_head_dim=16, num_layers=1, embedding_dim=DIM,
                                  num_embeddings=LENGTH, additional_embeddings=4)
    with torch.no_grad():
        karlo_like.clip_std.fill_(0.3)
    state = {f"prior.{k}": v for k, v in karlo_like.state_dict().items()}
    prior = DiffusionPrior(tiny_config())
    state |= {"null_text_embed": prior.null_text_embed.detach(), "null_tokens": torch.zeros(LENGTH, WIDTH)}
    load_into(prior, state, "a diffusers prior")
    assert torch.equal(prior.prior.clip_std, karlo_like.clip_std)
