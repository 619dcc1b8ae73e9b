"""The embedding step: shards, stats, resume after interruption, counted skips."""

from __future__ import annotations

import pytest
import torch
from tiny_clips import CONTEXT_LENGTH, EMBED_DIM, TEXT_WIDTH, shared_open_clip

from clip.embed import embed_dataset
from clip.shards import EmbeddingShards
from core.errors import CheckpointError
from data import DatasetConfig
from data.testing import cases, write_folder


@pytest.fixture(scope="session")
def spec(tmp_path_factory):
    return shared_open_clip(tmp_path_factory)


SHAPES = DatasetConfig(num_examples=50, val_size=10, image_size=32)


def test_shards_hold_normalised_embeddings_tokens_and_images(spec, tmp_path):
    shards = embed_dataset(spec, SHAPES, "train", tmp_path, image_size=16, shard_size=16)
    assert shards.count == 40 and len(shards.index["shards"]) == 3
    data = shards.load(shards.fields)
    assert data["image_embeds"].shape == (40, EMBED_DIM)
    assert torch.allclose(data["image_embeds"].norm(dim=1), torch.ones(40), atol=1e-4)
    assert torch.allclose(data["text_embeds"].norm(dim=1), torch.ones(40), atol=1e-4)
    assert data["text_tokens"].shape == (40, CONTEXT_LENGTH, TEXT_WIDTH)
    assert data["text_mask"].dtype == torch.bool and data["text_mask"][:, 0].all()
    assert data["images"].shape == (40, 3, 16, 16) and data["images"].dtype == torch.uint8
    assert torch.allclose(shards.image_mean, data["image_embeds"].mean(0), atol=1e-5)
    assert shards.captions[0].startswith("a ") and len(shards.keys) == 40
    assert shards.spec.fingerprint() == spec.fingerprint()


def test_interrupted_run_resumes_and_matches(spec, tmp_path):
    full = embed_dataset(spec, SHAPES, "train", tmp_path / "full", shard_size=16)

    def stop_after_first(k):
        if k == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_dataset(spec, SHAPES, "train", tmp_path / "split", shard_size=16, after_shard=stop_after_first)
    first = tmp_path / "split" / "shard_00000.safetensors"
    stamp = first.stat().st_mtime_ns
    assert not (tmp_path / "split" / "index.json").exists()
    seen = []
    resumed = embed_dataset(spec, SHAPES, "train", tmp_path / "split", shard_size=16, after_shard=seen.append)
    assert seen == [1, 2], "finished shards must be skipped"
    assert first.stat().st_mtime_ns == stamp
    a, b = full.load(), resumed.load()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.captions == resumed.captions


def test_finished_set_is_reused_and_other_inputs_refused(spec, tmp_path):
    embed_dataset(spec, SHAPES, "train", tmp_path, shard_size=64)
    again = embed_dataset(spec, SHAPES, "train", tmp_path, shard_size=64, after_shard=lambda k: pytest.fail("re-ran"))
    assert again.count == 40
    with pytest.raises(CheckpointError, match="another dataset"):
        embed_dataset(spec, SHAPES.override(seed=3), "train", tmp_path, shard_size=64)


def test_bad_rows_are_counted_not_fatal(spec, tmp_path):
    items = cases()
    write_folder(tmp_path / "images", items)
    cfg = DatasetConfig(source="folder", path=str(tmp_path / "images"), val_fraction=0.01)
    shards = embed_dataset(spec, cfg, "train", tmp_path / "shards", shard_size=8)
    expected_skips = {c.skip for c in items if c.skip}
    train_keys = set(shards.keys)
    assert all(not k.startswith(("truncated", "garbage", "no_caption")) for k in train_keys)
    skipped = shards.skips.get("skipped", {})
    assert set(skipped) <= expected_skips and sum(skipped.values()) >= 1
    assert shards.count + sum(skipped.values()) <= len(items)


def test_missing_shards_are_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="clip.embed"):
        EmbeddingShards.open(tmp_path)


def test_command_line_preset_embeds_the_split_that_preset_trains_on(spec, tmp_path):
    from clip.embed import main
    from clip.train import settings_for

    val_size = settings_for("smoke").data.val_size  # the smoke CLIP's held-out split, not the dataset default
    folder = spec.save(tmp_path / "clip")  # a spec file naming the CLIP's files where they are
    assert main(["--clip", str(folder), "--preset", "smoke", "--split", "val", "--image-size", "0",
                 "--out", str(tmp_path / "val")]) == 0
    assert EmbeddingShards.open(tmp_path / "val").count == val_size != DatasetConfig().val_size
    assert main(["--clip", str(folder), "--preset", "smoke", "--set", "val_size=7", "--split", "val",
                 "--image-size", "0", "--out", str(tmp_path / "val7")]) == 0
    assert EmbeddingShards.open(tmp_path / "val7").count == 7
