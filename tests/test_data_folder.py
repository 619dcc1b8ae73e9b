"""The folder source on a tree holding every kind of bad file, with each caption source."""

import logging
import os
from collections import Counter

import pytest

from core.errors import ConfigError
from data import DatasetConfig, SkipCounter, open_dataset
from data.testing import cases, image_bytes, write_folder

CASES = cases()
KEPT = {c.name: c for c in CASES if c.skip is None}


def folder(path, **changes) -> DatasetConfig:
    return DatasetConfig.parse({"source": "folder", "path": str(path), "val_fraction": 0.3, **changes})


def read_both_splits(cfg):
    datasets = [open_dataset(cfg, split) for split in ("train", "val")]
    examples = [[e for e in ds] for ds in datasets]
    skips = SkipCounter().merge(datasets[0].skips).merge(datasets[1].skips)
    return datasets, examples, skips


@pytest.mark.parametrize("captions", ["txt", "tsv", "jsonl"])
def test_exactly_the_good_examples_come_out(tmp_path, captions):
    write_folder(tmp_path, CASES, captions, subfolder="nested/deeper")
    (datasets, (train, val), skips) = read_both_splits(folder(tmp_path))
    assert train and val
    assert not {e.key for e in train} & {e.key for e in val}
    got = {e.key: e for e in train + val}
    assert set(got) == {f"nested/deeper/{c.name}.{c.extension}" for c in KEPT.values()}
    for key, example in got.items():
        case = KEPT[key.rsplit("/", 1)[1].split(".")[0]]
        assert example.image.mode == "RGB"
        assert example.caption == case.expected_caption
    assert skips.skipped == dict(Counter(c.skip for c in CASES if c.skip))
    assert skips.converted == dict(Counter(c.converted_from for c in CASES if c.converted_from))
    assert sum(len(ds) for ds in datasets) == len(CASES)


def test_getitem_returns_none_for_skipped_and_counts_once(tmp_path):
    write_folder(tmp_path, CASES)
    ds = open_dataset(folder(tmp_path, val_fraction=1e-9), "train")
    assert len(ds) == len(CASES)
    items = [ds[i] for i in range(len(ds))]
    assert sum(item is None for item in items) == len(CASES) - len(KEPT)
    first = ds.skips.as_dict()
    list(ds)  # a second epoch
    assert ds.skips.as_dict() == first
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_skips_are_logged_once_per_reason(tmp_path, caplog):
    write_folder(tmp_path, CASES + [c.__class__(**{**c.__dict__, "name": c.name + "_2"}) for c in CASES])
    with caplog.at_level(logging.WARNING, logger="data"):
        ds = open_dataset(folder(tmp_path, val_fraction=1e-9), "train")
        list(ds)
    reasons = {c.skip for c in CASES if c.skip} | {"duplicate_file"}  # the copies repeat picture and caption
    assert len([r for r in caplog.records if r.getMessage().startswith("skipped")]) == len(reasons)
    assert ds.skips.total == 2 * len(CASES) - len(KEPT)


def test_tsv_details(tmp_path):
    for name in ("a", "b", "c", "d"):
        (tmp_path / f"{name}.png").write_bytes(image_bytes())
    (tmp_path / "b.txt").write_bytes(b"from the sidecar")
    (tmp_path / "d.txt").write_bytes(b"sidecar loses")
    (tmp_path / "captions.tsv").write_bytes(b"a.png\tfirst\twith tab\r\n./b.png\nd.png\tfrom index\n\n")
    ds = open_dataset(folder(tmp_path, val_fraction=1e-9), "train")
    assert {e.key: e.caption for e in ds} == {"a.png": "first with tab", "d.png": "from index"}
    assert ds.skips.skipped == {"empty_caption": 1, "missing_caption": 1}  # b: no tab; c: nowhere


def test_jsonl_details(tmp_path, caplog):
    for name in ("a", "b", "c", "d"):
        (tmp_path / f"{name}.png").write_bytes(image_bytes())
    (tmp_path / "captions.jsonl").write_text(
        '{"image": "a.png", "text": "by image/text"}\n'
        '{"path": "b.png", "caption": 42}\n'
        "not json\n"
        '{"file": "d.png", "caption": "d"}\n'
        '{"file": "gone.png", "caption": "no such file"}\n'
    )
    with caplog.at_level(logging.WARNING, logger="data"):
        ds = open_dataset(folder(tmp_path, val_fraction=1e-9), "train")
        got = {e.key: e.caption for e in ds}
    assert got == {"a.png": "by image/text", "d.png": "d"}
    assert ds.skips.skipped == {"missing_caption": 2, "bad_caption_row": 1, "caption_without_image": 1}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "captions.jsonl line 3" in messages and "gone.png" in messages


def test_fingerprint_tracks_contents(tmp_path):
    write_folder(tmp_path, CASES[:6], "tsv")
    cfg = folder(tmp_path)
    base = open_dataset(cfg, "train").fingerprint()
    assert base == open_dataset(cfg, "train").fingerprint()
    assert base != open_dataset(cfg, "val").fingerprint()

    image = tmp_path / f"{CASES[0].name}.{CASES[0].extension}"
    stat = image.stat()
    image.write_bytes(image_bytes(size=(25, 20)))
    changed_image = open_dataset(cfg, "train").fingerprint()
    assert changed_image != base
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = open_dataset(cfg, "train").fingerprint()
    assert touched != changed_image

    index = tmp_path / "captions.tsv"
    text = index.read_bytes()
    stat = index.stat()
    index.write_bytes(text.replace(b"a red circle", b"a red circlE", 1))  # same size
    os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and same mtime
    assert open_dataset(cfg, "train").fingerprint() != touched


def test_split_is_stable_when_the_folder_grows(tmp_path):
    for i in range(40):  # distinct pictures: identical ones share a split
        (tmp_path / f"{i:03d}.png").write_bytes(image_bytes(size=(24, 10 + i)))
        (tmp_path / f"{i:03d}.txt").write_text(f"image {i}")
    cfg = folder(tmp_path)
    before = {split: {e.key for e in open_dataset(cfg, split)} for split in ("train", "val")}
    assert before["train"] and before["val"] and not before["train"] & before["val"]
    for i in range(40, 80):
        (tmp_path / f"{i:03d}.png").write_bytes(image_bytes(size=(24, 10 + i)))
        (tmp_path / f"{i:03d}.txt").write_text(f"image {i}")
    after = {split: {e.key for e in open_dataset(cfg, split)} for split in ("train", "val")}
    assert before["train"] <= after["train"] and before["val"] <= after["val"]
    assert len(after["val"]) == pytest.approx(0.3 * 80, abs=12)


def test_iter_shard_disjoint_and_complete(tmp_path):
    write_folder(tmp_path, CASES)
    ds = open_dataset(folder(tmp_path), "train")
    shards = [[e.key for e in ds.iter_shard(rank, 2)] for rank in range(2)]
    assert shards[0] and shards[1] and not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(e.key for e in ds)


def test_bad_paths(tmp_path):
    with pytest.raises(ConfigError, match="needs a path"):
        DatasetConfig.parse({"source": "folder"})
    with pytest.raises(ConfigError, match="not an existing directory"):
        open_dataset(folder(tmp_path / "missing"), "train")
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ConfigError, match="no images"):
        open_dataset(folder(tmp_path), "train")


def test_repeated_pairs_are_counted_and_repeated_pictures_share_a_split(tmp_path):
    picture = image_bytes(size=(40, 30))
    for name in ("a.png", "b.png", "c.png", "d.png"):
        (tmp_path / name).write_bytes(picture)
    (tmp_path / "other.png").write_bytes(image_bytes(size=(40, 31)))
    (tmp_path / "captions.tsv").write_text("a.png\tone\nb.png\tone\nc.png\ttwo\nd.png\tone\nother.png\tone\n")
    datasets, (train, val), skips = read_both_splits(folder(tmp_path, val_fraction=0.5))
    assert skips.skipped == {"duplicate_file": 2}  # b and d repeat a's picture and caption
    kept = {e.key: e.caption for e in train + val}
    assert kept == {"a.png": "one", "c.png": "two", "other.png": "one"}  # another caption of a picture stays
    same_split = [ds for ds in datasets if any(e.key == "a.png" for e in ds)][0]
    assert any(e.key == "c.png" for e in same_split), "a picture is never in both splits"
