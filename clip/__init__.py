"""The frozen CLIP every stage is conditioned on: its identity (`ClipSpec`) and its encoder."""

from clip.encoder import ClipEncoder, TextEncoding, load_encoder, resolve_spec
from clip.spec import ClipSpec, check_same_clip

__all__ = ["ClipEncoder", "ClipSpec", "TextEncoding", "check_same_clip", "load_encoder", "resolve_spec"]
