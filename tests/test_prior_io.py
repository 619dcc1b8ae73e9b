"""Saved priors (round trip, refusals) and training from embedding shards end to end."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_clips import shared_open_clip

from core.errors import CheckpointError, ClipMismatchError, ConfigError
from prior.evaluate import main as evaluate_main
from prior.io import load_prior, read_info, save_prior
from prior.sample import sample_prior
from prior.testing import DIM, fake_pairs, fake_spec, fake_text, tiny_prior, write_fake_shards
from prior.train import main as train_main
from prior.train import settings_for, train_prior


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def saved(tmp_path):
    spec = fake_spec()
    prior = tiny_prior(seed=4, spec=spec)
    with torch.no_grad():
        prior.null_tokens.normal_()
    return save_prior(tmp_path / "prior", prior, spec, {"step": 7}), prior, spec


def test_round_trip_is_bit_identical(saved):
    folder, prior, spec = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "clip_spec.json", "model.safetensors", "prior_config.json", "train_info.json"]
    loaded = load_prior(folder, expected_spec=spec)
    assert loaded.config == prior.config and loaded.clip_spec.fingerprint() == spec.fingerprint()
    assert not loaded.training
    stored = json.loads((folder / "clip_spec.json").read_text())
    assert "/" not in stored["model"] + stored["pretrained"], "the prior identifies the CLIP, the CLIP folder holds it"
    ours, theirs = prior.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    text = fake_text(3)
    assert torch.equal(sample_prior(prior, text, [1, 2, 3], steps=4), sample_prior(loaded, text, [1, 2, 3], steps=4))
    assert read_info(folder) == {"step": 7}


def test_refuses_a_different_clip(saved):
    folder, _, _ = saved
    with pytest.raises(ClipMismatchError, match="trained with CLIP"):
        load_prior(folder, expected_spec=fake_spec(weights_sha256="b" * 64))


def test_truncated_weights_are_a_clear_error(saved):
    folder, _, _ = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_prior(folder)


def test_wrong_shaped_weights_are_a_clear_error(saved):
    folder, _, _ = saved
    config = json.loads((folder / "prior_config.json").read_text())
    config["head_dim"] = 8
    (folder / "prior_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_prior(folder)


def test_missing_or_broken_folder_parts_are_clear_errors(saved, tmp_path):
    folder, _, _ = saved
    with pytest.raises(CheckpointError, match="no such directory"):
        load_prior(tmp_path / "nowhere")
    (folder / "prior_config.json").write_text('{"heads": "many"}')
    with pytest.raises(CheckpointError, match="heads"):
        load_prior(folder)
    (folder / "prior_config.json").unlink()
    with pytest.raises(CheckpointError, match="missing file"):
        load_prior(folder)
    unset = tiny_prior().__class__(tiny_prior().config)
    with pytest.raises(ConfigError, match="not set"):
        save_prior(tmp_path / "unset", unset, fake_spec())


def test_train_evaluate_save_and_cli(tmp_path, tmp_path_factory):
    spec = shared_open_clip(tmp_path_factory)  # a real tiny CLIP, so the zero-shot figures run
    write_fake_shards(tmp_path / "train", spec, 96, seed=0)
    write_fake_shards(tmp_path / "val", spec, 24, seed=1, split="val")
    settings = settings_for("smoke", ["train.steps=6", "train.batch_size=16", "eval.size=12", "eval.steps=3",
                                      "eval.zeroshot=true"])
    folder, metrics = train_prior(settings, tmp_path / "train", tmp_path / "out", val_shards_dir=tmp_path / "val")
    for key in ("cos_pred_image", "cos_pred_text", "cos_image_text", "cos_pred_shuffled", "retrieval_top1",
                "baseline_cos_image", "baseline_retrieval_top1", "val_loss", "zeroshot_color", "zeroshot_min",
                "image_zeroshot_shape", "baseline_zeroshot_size"):
        assert key in metrics, key
    prior = load_prior(folder, expected_spec=spec)
    assert prior.config.embed_dim == spec.embed_dim and prior.config.context_length == spec.context_length
    assert read_info(folder)["step"] == 6
    # the trained prior samples as its evaluation did unless told otherwise
    e = settings.eval
    assert prior.config.sampling.model_dump() == {"sampler": e.sampler, "steps": 3, "guidance": e.guidance,
                                                  "best_of": e.prior_best_of}
    # the saved normalisation is the shards' statistics
    from clip.shards import EmbeddingShards
    shards = EmbeddingShards.open(tmp_path / "train")
    assert torch.equal(prior.prior.clip_mean[0], shards.image_mean) and torch.equal(prior.prior.clip_std[0], shards.image_std)

    out = tmp_path / "cli"
    assert train_main(["--preset", "smoke", "--shards", str(tmp_path / "train"), "--out", str(out),
                       "--set", "train.steps=2", "--set", "train.batch_size=16"]) == 0
    assert (out / "model" / "model.safetensors").is_file()
    assert train_main(["--preset", "smoke", "--shards", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert train_main(["--preset", "smoke", "--shards", str(tmp_path / "train"), "--out", str(tmp_path / "o2"),
                       "--set", "prior.embed_dim=7"]) == 2
    assert evaluate_main(["--prior", str(out / "model"), "--shards", str(tmp_path / "val"), "--set", "size=8",
                          "--set", "steps=2", "--set", "zeroshot=false"]) == 0


def test_refuses_validation_shards_of_another_clip(tmp_path):
    write_fake_shards(tmp_path / "train", fake_spec(), 40)
    write_fake_shards(tmp_path / "val", fake_spec(weights_sha256="c" * 64), 10, split="val")
    settings = settings_for("smoke", ["train.steps=1"])
    with pytest.raises(ClipMismatchError):
        train_prior(settings, tmp_path / "train", tmp_path / "out", val_shards_dir=tmp_path / "val")
    with pytest.raises(ConfigError, match="fewer than one batch"):
        train_prior(settings_for("smoke", ["train.batch_size=64"]), tmp_path / "train", tmp_path / "out")
    assert fake_pairs(2)["text_embeds"].shape == (2, DIM)
