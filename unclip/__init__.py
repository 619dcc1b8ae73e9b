"""Inference with the trained cascade: text to image, variations, interpolations and text diffs.

No Prefect here; the command lines in flows/ wrap this package.
"""

from unclip.errors import ImageFileError, ModelNotFoundError, PromptError, SettingsError
from unclip.pipeline import UnclipPipeline
from unclip.provenance import contact_sheet, read_png_metadata, save_png, save_run
from unclip.slerp import slerp

__all__ = [
    "ImageFileError",
    "ModelNotFoundError",
    "PromptError",
    "SettingsError",
    "UnclipPipeline",
    "contact_sheet",
    "read_png_metadata",
    "save_png",
    "save_run",
    "slerp",
]
