"""The webdataset source: streamed tar shards with every kind of bad member."""

import functools
import io
import tarfile
import types
from collections import Counter

import pytest
import torch.utils.data

from core.errors import ConfigError
from data import DatasetConfig, SkipCounter, collate_examples, open_dataset
from data.testing import cases, image_bytes, write_shard

CASES = cases()
KEPT = {c.name: c for c in CASES if c.skip is None}


def shards_cfg(path, **changes) -> DatasetConfig:
    return DatasetConfig.parse({"source": "webdataset", "path": str(path), "val_fraction": 0.3, **changes})


def read_both_splits(cfg):
    datasets = [open_dataset(cfg, split) for split in ("train", "val")]
    examples = [list(ds) for ds in datasets]
    return examples, SkipCounter().merge(datasets[0].skips).merge(datasets[1].skips)


@pytest.mark.parametrize("json_captions", [False, True])
def test_exactly_the_good_examples_come_out(tmp_path, json_captions):
    write_shard(tmp_path / "00000.tar", CASES[:10], json_captions)
    write_shard(tmp_path / "00001.tar", CASES[10:], json_captions)
    before = sorted(p.name for p in tmp_path.iterdir())
    (train, val), skips = read_both_splits(shards_cfg(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing extracted
    assert train and val and not {e.key for e in train} & {e.key for e in val}
    got = {e.key: e for e in train + val}
    assert set(got) == set(KEPT)
    for key, example in got.items():
        assert example.image.mode == "RGB" and example.caption == KEPT[key].expected_caption
    assert skips.skipped == dict(Counter(c.skip for c in CASES if c.skip))
    assert skips.converted == dict(Counter(c.converted_from for c in CASES if c.converted_from))


def add_member(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def test_member_layout_details(tmp_path):
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        add_member(tar, "000/k1.jpg", image_bytes(fmt="JPEG"))
        add_member(tar, "000/k1.txt", b"text wins")
        add_member(tar, "000/k1.json", b'{"caption": "json loses"}')
        add_member(tar, "000/k2.txt", b"caption without image")
        add_member(tar, "000/k3.png", image_bytes())
        add_member(tar, "000/k3.json", b"{not json")
        add_member(tar, "000/k4.seg.png", image_bytes(size=(9, 9)))  # key k4, extension "seg.png"
        add_member(tar, "000/k4.webp", image_bytes(size=(30, 30), fmt="WEBP"))
        add_member(tar, "000/k4.json", b'{"caption": "  spaced  out "}')
    ds = open_dataset(shards_cfg(tmp_path / "a.tar", val_fraction=1e-9), "train")
    got = {e.key: e for e in ds}
    assert {key: e.caption for key, e in got.items()} == {"000/k1": "text wins", "000/k4": "spaced out"}
    assert got["000/k4"].image.size == (30, 30)
    assert ds.skips.skipped == {"bad_caption_json": 1, "missing_image": 1}


def test_truncated_shard_keeps_what_was_read(tmp_path):
    good = [c for c in CASES if c.skip is None]
    write_shard(tmp_path / "full.tar", good)
    data = (tmp_path / "full.tar").read_bytes()
    (tmp_path / "full.tar").unlink()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    ds = open_dataset(shards_cfg(tmp_path, val_fraction=1e-9), "train")
    keys = [e.key for e in ds]
    assert 0 < len(keys) < len(good)
    assert keys == [c.name for c in good][: len(keys)]
    assert ds.skips.skipped.get("truncated_shard") == 1


def test_paths_glob_and_fingerprint(tmp_path):
    for i in range(3):
        write_shard(tmp_path / f"{i:05d}.tar", CASES[i * 5 : i * 5 + 5])
    (tmp_path / "notes.md").write_text("not a shard")
    by_dir = open_dataset(shards_cfg(tmp_path), "train")
    assert [p.name for p in by_dir.shards] == ["00000.tar", "00001.tar", "00002.tar"]
    by_glob = open_dataset(shards_cfg(tmp_path / "0000[01].tar"), "train")
    assert [p.name for p in by_glob.shards] == ["00000.tar", "00001.tar"]
    base = by_dir.fingerprint()
    assert base == open_dataset(shards_cfg(tmp_path), "train").fingerprint()
    assert base != open_dataset(shards_cfg(tmp_path), "val").fingerprint()
    assert base != by_glob.fingerprint()
    write_shard(tmp_path / "00002.tar", CASES[10:16])
    assert open_dataset(shards_cfg(tmp_path), "train").fingerprint() != base
    with pytest.raises(ConfigError, match="matches no files"):
        open_dataset(shards_cfg(tmp_path / "*.tgz"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no tar shards"):
        open_dataset(shards_cfg(tmp_path / "empty"), "train")


def all_shares(ds, world):
    return [[e.key for e in ds.iter_shard(rank, world)] for rank in range(world)]


@pytest.mark.parametrize("n_shards", [1, 2, 3])
def test_iter_shard_disjoint_and_complete(tmp_path, n_shards):
    per = -(-len(CASES) // n_shards)
    for i in range(n_shards):
        write_shard(tmp_path / f"{i:05d}.tar", CASES[i * per : (i + 1) * per])
    ds = open_dataset(shards_cfg(tmp_path), "train")
    everything = sorted(e.key for e in ds)
    shares = all_shares(ds, 2)
    assert all(shares) and not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == everything


@pytest.mark.parametrize("n_shards", [1, 3, 5])
def test_worker_split_inside_each_rank(tmp_path, monkeypatch, n_shards):
    per = -(-len(CASES) // n_shards)
    for i in range(n_shards):
        write_shard(tmp_path / f"{i:05d}.tar", CASES[i * per : (i + 1) * per])
    ds = open_dataset(shards_cfg(tmp_path, val_fraction=1e-9), "train")
    everything = sorted(e.key for e in ds)
    shares = []
    for worker in range(2):
        info = types.SimpleNamespace(id=worker, num_workers=2)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        shares += all_shares(ds, 2)
    flat = [key for share in shares for key in share]
    assert sorted(flat) == everything and len(flat) == len(set(flat))


def test_real_dataloader_workers(tmp_path):
    write_shard(tmp_path / "00000.tar", CASES[:12])
    write_shard(tmp_path / "00001.tar", CASES[12:])
    ds = open_dataset(shards_cfg(tmp_path, val_fraction=1e-9), "train")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=2, collate_fn=functools.partial(collate_examples, size=16)
    )
    keys = [key for pixels, captions, batch_keys in loader for key in batch_keys]
    assert sorted(keys) == sorted(KEPT)
