"""Tensor shards: streamed batches (order, ranks, bounded buffer), exact resume through fit, resumable writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.errors import CheckpointError, ConfigError
from core.trainer import TrainConfig, fit
from data import DatasetConfig, open_dataset
from data.shards import ShardSet, finish_index, prepare_images, shard_name, write_shard, write_shards


def rows_shards(folder: Path, n: int = 50, per_shard: int = 7) -> ShardSet:
    """n rows whose `x` is the row number, in shards of `per_shard`."""
    for k, start in enumerate(range(0, n, per_shard)):
        x = torch.arange(start, min(n, start + per_shard))
        write_shard(folder / shard_name(k), {"x": x, "y": x.float() * 2}, [f"c{i}" for i in x.tolist()],
                    [str(i) for i in x.tolist()])
    finish_index(folder, {"identity": {}})
    return ShardSet.open(folder)


def seen(batches, epoch, rank=0, world=1) -> list[int]:
    return [int(v) for batch in batches(epoch, rank, world) for v in batch["x"]]


def test_an_epoch_streams_every_row_once_in_a_new_order(tmp_path):
    shards = rows_shards(tmp_path)
    batches = shards.batches(("x", "y"), batch_size=4, seed=0, buffer_rows=14)
    first, again, second = seen(batches, 0), seen(batches, 0), seen(batches, 1)
    assert first == again, "a pure function of the epoch"
    assert len(first) == len(set(first)) == 48  # 50 rows in batches of 4: the last 2 are left over
    assert first != second and len(set(first) & set(second)) >= 44
    assert first != sorted(first)
    batch = next(iter(batches(0, 0, 1)))
    assert torch.equal(batch["y"], batch["x"].float() * 2), "rows stay whole"


def test_processes_get_disjoint_equal_shares(tmp_path):
    shards = rows_shards(tmp_path, n=61)
    batches = shards.batches(("x",), batch_size=3, seed=1, buffer_rows=14)
    shares = [seen(batches, 0, rank, 3) for rank in range(3)]
    assert len({len(s) for s in shares}) == 1, "every process yields as many batches"
    assert not set(shares[0]) & set(shares[1]) and not set(shares[1]) & set(shares[2])
    assert sum(map(len, shares)) >= 61 - 3 * 3 * 2


def test_only_a_buffer_of_shards_is_read_at_a_time(tmp_path, monkeypatch):
    shards = rows_shards(tmp_path, n=70, per_shard=7)
    reads, peak = [], []
    original = ShardSet.read

    def counting(self, i, fields):
        reads.append(i)
        return original(self, i, fields)

    monkeypatch.setattr(ShardSet, "read", counting)
    batches = shards.batches(("x",), batch_size=7, seed=0, buffer_rows=14)
    for _ in batches(0, 0, 1):
        peak.append(len(reads))
    assert sorted(reads) == list(range(10))
    assert peak[0] == 2, "the first batch needs only the first buffer (2 shards)"


def test_a_killed_fit_resumes_to_the_same_weights(tmp_path):
    shards = rows_shards(tmp_path / "data", n=40, per_shard=6)
    calls = {"n": 0, "kill_at": None}

    def loss(model, batch):
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            raise KeyboardInterrupt
        return (model(batch["y"][:, None]) - batch["x"][:, None].float()).pow(2).mean()

    def train(run_dir, kill_at=None):
        calls.update(n=0, kill_at=kill_at)
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)
        cfg = TrainConfig(steps=25, batch_size=4, lr=1e-2, checkpoint_every=3, log_every=1, ema_decay=0.5)
        return fit(model, loss, shards.batches(("x", "y"), 4, 0, buffer_rows=12), cfg, run_dir)

    straight = train(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "split", kill_at=14)  # killed in step 14, mid-epoch (last checkpoint at 12)
    resumed = train(tmp_path / "split")
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.losses == resumed.losses


def test_batches_refuse_too_little_data(tmp_path):
    shards = rows_shards(tmp_path, n=5)
    with pytest.raises(ConfigError, match="fewer than one batch"):
        shards.batches(("x",), batch_size=8, seed=0)
    with pytest.raises(ConfigError, match="smaller than one batch"):
        shards.batches(("x",), batch_size=4, seed=0, buffer_rows=2)
    with pytest.raises(CheckpointError, match="lack"):
        shards.batches(("nope",), batch_size=2, seed=0)


def test_image_shards_resume_reuse_and_refuse_other_data(tmp_path):
    cfg = DatasetConfig(num_examples=30, val_size=5, image_size=16)
    dataset = open_dataset(cfg, "train")
    done = []

    def encode(examples):
        return {"n": torch.arange(len(examples))}

    def stop(k):
        done.append(k)
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_shards(tmp_path / "w", dataset, {"d": 1}, encode, shard_size=10, after_shard=stop)
    assert not (tmp_path / "w" / "index.json").exists()
    later = []
    index = write_shards(tmp_path / "w", dataset, {"d": 1}, encode, shard_size=10, after_shard=later.append)
    assert later == [2] and index["count"] == 25, "finished shards are not written again"
    images = prepare_images(dataset, 8, tmp_path / "img", {"d": dataset.fingerprint()}, shard_size=10)
    assert images.count == 25 and images.head(3, ("images",))["images"].shape == (3, 3, 8, 8)
    assert images.head(None, ("images",))["images"].dtype == torch.uint8
    assert prepare_images(dataset, 8, tmp_path / "img", {"d": dataset.fingerprint()}).count == 25  # reused
    with pytest.raises(CheckpointError, match="another dataset"):
        prepare_images(dataset, 8, tmp_path / "img", {"d": "other"})


def test_a_failure_before_the_first_shard_leaves_no_folder(tmp_path):
    dataset = open_dataset(DatasetConfig(num_examples=12, val_size=2, image_size=16), "train")

    def broken(examples):
        raise RuntimeError("no CLIP")

    with pytest.raises(RuntimeError):
        write_shards(tmp_path / "out", dataset, {}, broken, shard_size=4)
    assert not (tmp_path / "out").exists()
