"""User-facing errors: command lines print these as one line and exit non-zero."""


class UnclipError(Exception):
    """An error caused by user input (a config value, a file, a model name) rather than a bug."""


class ConfigError(UnclipError, ValueError):
    """A configuration value or preset name that cannot be used."""


class CheckpointError(UnclipError):
    """A checkpoint folder that is missing, truncated, or does not match its config."""


class ClipMismatchError(UnclipError):
    """A model trained against one CLIP is used with another."""
