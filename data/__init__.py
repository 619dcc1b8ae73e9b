"""One interface for image–caption datasets: procedural shapes, OpenMoji emoji, image folders, tar shards."""

from data.captions import BadCaption, caption_text, clean_caption
from data.config import DatasetConfig
from data.emoji import EmojiDataset
from data.example import Example
from data.folder import FolderDataset
from data.images import BadImage, load_rgb
from data.shapes.dataset import ShapesDataset
from data.skips import BadItem, SkipCounter
from data.sources import ImageCaptionDataset, open_dataset
from data.transforms import collate_examples, to_pil, to_tensor
from data.webdataset import TarShardDataset

__all__ = [
    "BadCaption",
    "BadImage",
    "BadItem",
    "DatasetConfig",
    "EmojiDataset",
    "Example",
    "FolderDataset",
    "ImageCaptionDataset",
    "ShapesDataset",
    "SkipCounter",
    "TarShardDataset",
    "caption_text",
    "clean_caption",
    "collate_examples",
    "load_rgb",
    "open_dataset",
    "to_pil",
    "to_tensor",
]
