"""User errors of the inference pipeline and its command lines: one line each, exit status 2."""

from core.errors import ConfigError, UnclipError


class PromptError(ConfigError):
    """A missing or empty prompt or caption."""


class ImageFileError(UnclipError):
    """An input image that does not exist, cannot be read, or is not an image."""


class ModelNotFoundError(UnclipError):
    """A model folder, registered name, alias or version that does not exist."""


class SettingsError(ConfigError):
    """Sampling settings the loaded models cannot honour: sizes, step counts, stage names, scales."""
