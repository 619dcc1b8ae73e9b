"""The shapes source through open_dataset: sizes, splits, paraphrases, fingerprints, shards."""

import types

import numpy as np
import pytest
import torch.utils.data

from data import DatasetConfig, Example, open_dataset
from data.shapes import COLORS, canonical_caption, parse_caption, render


def shapes(**changes) -> DatasetConfig:
    return DatasetConfig.parse({"num_examples": 60, "image_size": 32, **changes})


def test_split_sizes():
    cfg = shapes(val_fraction=0.1)
    train, val = open_dataset(cfg, "train"), open_dataset(cfg, "val")
    assert (len(train), len(val)) == (54, 6)
    cfg = shapes(val_size=7)
    assert (len(open_dataset(cfg, "train")), len(open_dataset(cfg, "val"))) == (53, 7)
    assert len(open_dataset(shapes(num_examples=10, val_fraction=0.01), "val")) == 1


def test_examples_are_rendered_from_their_attributes():
    ds = open_dataset(shapes(), "train")
    example = ds[3]
    assert isinstance(example, Example) and example.image.mode == "RGB" and example.image.size == (32, 32)
    assert example.image.tobytes() == render(ds.attributes(3), 32).tobytes()
    assert example.caption == canonical_caption(ds.attributes(3))
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_deterministic_across_instances():
    a, b = open_dataset(shapes(), "val"), open_dataset(shapes(), "val")
    for i in range(len(a)):
        assert (a[i].key, a[i].caption, a[i].image.tobytes()) == (
            b[i].key,
            b[i].caption,
            b[i].image.tobytes(),
        )
    other_seed = open_dataset(shapes(seed=1), "val")
    assert [other_seed.attributes(i) for i in range(3)] != [a.attributes(i) for i in range(3)]


def test_splits_are_disjoint_streams():
    cfg = shapes(num_examples=400)
    train, val = open_dataset(cfg, "train"), open_dataset(cfg, "val")
    assert not {e.key for e in train} & {e.key for e in val}
    assert train.stream_seed != val.stream_seed
    # Val is its own stream: no (seed, index) and so no picture (jitter included) is shared.
    assert not {train.attributes(i) for i in range(len(train))} & {val.attributes(i) for i in range(len(val))}


def test_paraphrases_only_in_train_and_keep_meaning():
    cfg = shapes(num_examples=200, val_size=50, paraphrase=True)
    train, val = open_dataset(cfg, "train"), open_dataset(cfg, "val")
    for i in range(len(val)):
        assert val[i].caption == canonical_caption(val.attributes(i))
    captions = [train.caption(i) for i in range(len(train))]
    canonical = [canonical_caption(train.attributes(i)) for i in range(len(train))]
    changed = sum(c != k for c, k in zip(captions, canonical))
    assert 0.3 * len(train) < changed < 0.7 * len(train)
    for i, caption in enumerate(captions):
        assert parse_caption(caption) == train.attributes(i).replace(scale=1.0, dx=0.0, dy=0.0)
    assert captions == [open_dataset(cfg, "train").caption(i) for i in range(len(train))]
    plain = open_dataset(shapes(num_examples=200, val_size=50), "train")
    assert [plain.caption(i) for i in range(len(plain))] == canonical


def test_fingerprint():
    base = open_dataset(shapes(), "train").fingerprint()
    assert base == open_dataset(shapes(), "train").fingerprint()
    others = [
        open_dataset(shapes(), "val"),
        open_dataset(shapes(seed=1), "train"),
        open_dataset(shapes(image_size=64), "train"),
        open_dataset(shapes(num_examples=61), "train"),
        open_dataset(shapes(paraphrase=True), "train"),
    ]
    assert len({base, *(ds.fingerprint() for ds in others)}) == 1 + len(others)
    assert open_dataset(shapes(min_side=2), "train").fingerprint() == base  # does not change the data


def test_iter_shard_is_disjoint_and_complete():
    ds = open_dataset(shapes(), "train")
    everything = [e.key for e in ds]
    shards = [[e.key for e in ds.iter_shard(rank, 2)] for rank in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(everything) and len(everything) == len(ds)
    with pytest.raises(ValueError):
        list(ds.iter_shard(2, 2))


def test_iteration_splits_between_dataloader_workers(monkeypatch):
    ds = open_dataset(shapes(), "train")
    seen = []
    for worker in range(3):
        info = types.SimpleNamespace(id=worker, num_workers=3)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        for rank in range(2):
            seen.append([e.key for e in ds.iter_shard(rank, 2)])
    flat = [key for share in seen for key in share]
    assert len(flat) == len(set(flat)) == len(ds)
    assert all(share for share in seen)


def test_images_never_flipped():
    ds = open_dataset(shapes(num_examples=200, image_size=64), "train")
    checked = 0
    for i in range(len(ds)):
        attrs = ds.attributes(i)
        if attrs.position in ("left", "right"):
            pixels = np.asarray(ds[i].image)
            columns = np.nonzero((pixels != COLORS[attrs.background]).any(-1).any(0))[0]
            assert (columns.mean() < 32) == (attrs.position == "left")
            checked += 1
    assert checked > 20
