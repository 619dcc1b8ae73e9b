"""Training from embedding shards, the evaluation, and the saved decoder folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_clips import make_open_clip, make_shape_shards, shared_open_clip

from core.errors import CheckpointError, ClipMismatchError, ConfigError
from decoder.config import settings_for
from decoder.io import load_decoder, save_decoder
from decoder.testing import tiny_decoder
from decoder.train import loss_weights, resize_images, train_decoder


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip_spec(tmp_path_factory):
    return shared_open_clip(tmp_path_factory)


SMOKE = ["train.steps=3", "train.batch_size=8", "eval.size=4", "eval.invert_size=2", "eval.steps=3", "eval.invert_steps=4",
         "eval.decoder_best_of=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, clip_spec):
    root = tmp_path_factory.mktemp("decoder")
    make_shape_shards(root / "train", clip_spec, "train", 24)
    make_shape_shards(root / "val", clip_spec, "val", 6)
    settings = settings_for("smoke", SMOKE)
    decoder, metrics = train_decoder(settings, root / "train", root / "out", val_shards_dir=root / "val")
    return root, decoder, metrics


def test_training_writes_a_loadable_decoder_and_metrics(trained, clip_spec):
    root, decoder, metrics = trained
    for key in ("clip_consistency", "clip_consistency_real", "clip_consistency_real_lowres", "zeroshot_shape",
                "zeroshot_real_min", "inversion_psnr"):
        assert key in metrics and np.isfinite(metrics[key])
    # best of 2: the plain decodes are reported beside the kept ones, which CLIP reads at least as close
    assert {"clip_consistency_single", "zeroshot_single_shape", "render_match_single_shape"} <= set(metrics)
    assert metrics["clip_consistency"] >= metrics["clip_consistency_single"] - 1e-5
    assert (root / "out" / "samples_00000003.png").is_file()
    loaded, spec = load_decoder(root / "out" / "model", clip_spec)
    assert spec.fingerprint() == clip_spec.fingerprint()
    assert loaded.cfg.embed_dim == clip_spec.embed_dim and loaded.cfg.image_size == 16
    e = settings_for("smoke", SMOKE).eval  # the saved sampling defaults are those the evaluation used
    assert loaded.cfg.sampling.model_dump() == {"sampler": e.sampler, "steps": e.steps, "guidance": e.guidance,
                                                "best_of": e.decoder_best_of}
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 70])
    cond = {"image_embeds": torch.randn(2, 32), "text_embeds": torch.randn(2, 32), "text_tokens": torch.randn(2, 16, 32),
            "text_mask": torch.ones(2, 16, dtype=torch.bool)}
    with torch.no_grad():
        assert torch.allclose(loaded(x, t, **cond), decoder.float().eval()(x, t, **cond), atol=1e-5)


def test_a_resumed_run_takes_the_fitted_draft_from_its_checkpoint(trained, monkeypatch):
    root, decoder, _ = trained
    assert decoder.draft is not None  # the smoke preset drafts
    refit = lambda *a, **k: (lambda model, batch: pytest.fail("the draft was fitted again"))  # noqa: E731
    monkeypatch.setattr("decoder.train.make_draft_loss", refit)
    settings = settings_for("smoke", SMOKE)
    resumed, _ = train_decoder(settings, root / "train", root / "out")
    assert not any(p.requires_grad for p in resumed.draft.parameters())
    for a, b in zip(resumed.draft.parameters(), decoder.draft.parameters()):
        assert torch.equal(a, b)


def test_save_load_round_trip_and_refusals(tmp_path, clip_spec):
    decoder = tiny_decoder(draft_width=16, refine_width=8)
    spec = clip_spec.override(embed_dim=decoder.cfg.embed_dim, text_width=decoder.cfg.text_width)
    folder = save_decoder(tmp_path / "dec", decoder, spec)
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "decoder_config.json", "clip_spec.json"}
    loaded, _ = load_decoder(folder, spec)
    assert loaded.state_dict().keys() == decoder.state_dict().keys()
    assert any(k.startswith("refiner.") for k in loaded.state_dict()) and loaded.cfg.refine_width == 8
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), decoder.state_dict().values()))
    with pytest.raises(ClipMismatchError):
        load_decoder(folder, spec.override(weights_sha256="0" * 64))
    with pytest.raises(ConfigError, match="embed_dim"):
        save_decoder(tmp_path / "bad", decoder, clip_spec)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_decoder(tmp_path / "nowhere")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_decoder(folder)
    save_decoder(folder, decoder, spec)
    config = json.loads((folder / "decoder_config.json").read_text())
    (folder / "decoder_config.json").write_text(json.dumps({**config, "image_size": 32}))
    with pytest.raises(CheckpointError):
        load_decoder(folder)
    (folder / "decoder_config.json").write_text(json.dumps({**config, "colour": 1}))
    with pytest.raises(CheckpointError, match="colour"):
        load_decoder(folder)


def test_mismatched_clip_between_train_and_val_shards_is_refused(tmp_path, clip_spec):
    other = make_open_clip(tmp_path / "other", seed=5)
    make_shape_shards(tmp_path / "train", clip_spec, "train", 8)
    make_shape_shards(tmp_path / "val", other, "val", 4)
    with pytest.raises(ClipMismatchError):
        train_decoder(settings_for("smoke", ["train.steps=1"]), tmp_path / "train", tmp_path / "out",
                      val_shards_dir=tmp_path / "val")


def test_shards_smaller_than_the_decoder_are_refused(tmp_path, clip_spec):
    make_shape_shards(tmp_path / "train", clip_spec, "train", 8, image_size=8)
    with pytest.raises(ConfigError, match="smaller"):
        train_decoder(settings_for("smoke"), tmp_path / "train", tmp_path / "out")


def test_resize_keeps_flat_colours_exact():
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images[:, 0] = 200
    images[:, :, :16, :16] = 17
    small = resize_images(images, 16)
    assert small.shape == (2, 3, 16, 16) and set(small.unique().tolist()) == {0, 17, 200}


def test_the_settings_low_noise_share_reaches_the_loss():
    weights = loss_weights(settings_for("smoke", ["low_noise_share=0.5", "low_noise_end=0.25", "outline_weight=3"]))
    assert (weights.low_noise_share, weights.low_noise_end, weights.outline_weight) == (0.5, 0.25, 3.0)
    with pytest.raises(ConfigError, match="low_noise_end"):
        settings_for("smoke", ["low_noise_share=0.5", "low_noise_end=1.5"])
    with pytest.raises(ConfigError, match="low_noise_share"):
        settings_for("smoke", ["low_noise_share=1.0"])


def test_the_draft_is_fitted_to_the_images_then_frozen(tmp_path):
    from clip.shards import write_shards
    from core.trainer import make_accelerator
    from decoder.config import DraftTrainConfig
    from decoder.testing import DIM, SIZE, TOKENS, WIDTH, fake_caption, fake_image_embeds
    from decoder.train import fit_draft
    from prior.testing import fake_spec

    decoder = tiny_decoder(draft_width=64)
    n = 8
    text = fake_caption(n)
    images = torch.zeros(n, 3, SIZE, SIZE, dtype=torch.uint8)
    for i in range(n):  # each embedding has its own square
        images[i, :, i:i + 6, 2:8] = 255
    data = {"image_embeds": fake_image_embeds(n), "text_embeds": text.embeds, "text_tokens": text.tokens,
            "text_mask": text.mask, "images": images}
    settings = settings_for("smoke").override(decoder=decoder.cfg.override(image_dropout=0.0),
                                              draft=DraftTrainConfig(steps=300, batch_size=8, lr=3e-3))
    target = images.float() / 127.5 - 1

    def error():
        with torch.no_grad():
            return float((decoder.draw_draft(data["image_embeds"], data["text_embeds"]) - target).pow(2).mean())
    before, unet_before = error(), decoder.unet.conv_in.weight.clone()
    spec = fake_spec(embed_dim=DIM, text_width=WIDTH, context_length=TOKENS)
    shards = write_shards(tmp_path / "shards", spec, data, [f"c{i}" for i in range(n)], [str(i) for i in range(n)],
                          image_size=SIZE, shard_size=4)
    fit_draft(decoder, shards, settings, tmp_path / "draft", make_accelerator())
    assert error() < 0.1 * before
    assert not any(p.requires_grad for p in decoder.draft.parameters())
    assert all(p.requires_grad for p in decoder.unet.parameters())
    assert torch.equal(decoder.unet.conv_in.weight, unet_before)  # only the draft moved
