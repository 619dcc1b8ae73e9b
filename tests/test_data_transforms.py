"""to_tensor / to_pil / collate_examples, and DatasetConfig validation."""

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import ConfigError
from data import DatasetConfig, Example, collate_examples, open_dataset, to_pil, to_tensor


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: any flip or transpose shows."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)


def test_to_tensor_range_shape_and_orientation():
    x = to_tensor(halves(64, 64), 32)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x[0, 16, 2] == 1 and x[2, 16, 2] == -1  # left stays red
    assert x[0, 16, 29] == -1 and x[2, 16, 29] == 1  # right stays blue


def test_to_tensor_centre_crops_the_shorter_side():
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255  # only the centre square is white
    x = to_tensor(Image.fromarray(wide), 20)
    assert x.shape == (3, 20, 20) and torch.all(x == 1)
    tall = to_tensor(halves(20, 60).convert("L"), 10)
    assert tall.shape == (3, 10, 10)


def test_round_trip_is_exact_at_native_size():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    assert to_pil(to_tensor(image, 16)).tobytes() == image.tobytes()
    assert to_pil(torch.full((3, 2, 2), 5.0)).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError):
        to_pil(torch.zeros(2, 4, 4))


def test_collate_drops_skipped_items():
    batch = [Example("a", halves(8, 8), "one"), None, Example("b", halves(10, 12), "two"), None]
    pixels, captions, keys = collate_examples(batch, 8)
    assert pixels.shape == (2, 3, 8, 8) and captions == ["one", "two"] and keys == ["a", "b"]
    empty, captions, keys = collate_examples([None], 8)
    assert empty.shape == (0, 3, 8, 8) and captions == keys == []


def test_config_defaults_and_round_trip():
    cfg = DatasetConfig()
    assert (cfg.source, cfg.num_examples, cfg.image_size, cfg.val_fraction) == ("shapes", 20000, 64, 0.05)
    assert (cfg.val_size, cfg.seed, cfg.min_side, cfg.paraphrase, cfg.path) == (None, 0, 8, False, None)
    assert DatasetConfig.from_json(cfg.to_json()) == cfg
    assert cfg.shapes_split_sizes() == (19000, 1000)
    assert cfg.override(val_size=10).shapes_split_sizes() == (19990, 10)


@pytest.mark.parametrize(
    "bad",
    [
        {"val_fraction": 0.0},
        {"val_fraction": 1.0},
        {"num_examples": 0},
        {"image_size": 0},
        {"min_side": 0},
        {"seed": -1},
        {"val_size": 0},
        {"val_size": 20000},
        {"source": "lmdb"},
        {"shuffle": True},
        {"source": "folder"},
        {"source": "webdataset", "path": ""},
    ],
)
def test_config_rejects(bad):
    with pytest.raises(ConfigError):
        DatasetConfig.parse(bad)


def test_open_dataset_checks_split_and_path(tmp_path):
    with pytest.raises(ValueError):
        open_dataset(DatasetConfig(), "test")
    cfg = DatasetConfig.parse({"source": "webdataset", "path": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="does not exist"):
        open_dataset(cfg, "train")
