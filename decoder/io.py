"""A trained decoder on disk: model.safetensors + decoder_config.json + clip_spec.json in one folder."""

from __future__ import annotations

from pathlib import Path

import torch

from clip.spec import SPEC_FILE, ClipSpec, check_same_clip
from core.errors import CheckpointError, ConfigError
from core.model_folder import ModelKind, load_model_folder, read_model_config, save_model
from decoder.config import DecoderConfig
from decoder.model import Decoder

DECODER = ModelKind("decoder", DecoderConfig, Decoder)


def save_decoder(folder: str | Path, decoder: Decoder, clip_spec: ClipSpec) -> Path:
    """Write the decoder's weights (float32, contiguous) with its config and the CLIP it was trained with."""
    if decoder.cfg.embed_dim != clip_spec.embed_dim or decoder.cfg.text_width != clip_spec.text_width:
        raise ConfigError(
            f"decoder expects CLIP embed_dim {decoder.cfg.embed_dim} / text_width {decoder.cfg.text_width}, "
            f"but the given ClipSpec has {clip_spec.embed_dim} / {clip_spec.text_width}")
    state = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in decoder.state_dict().items()}
    return save_model(folder, state, DECODER, decoder.cfg, {SPEC_FILE.removesuffix(".json"): clip_spec.reference()})


def load_decoder(folder: str | Path, clip_spec: ClipSpec | None = None,
                 device: str | torch.device = "cpu") -> tuple[Decoder, ClipSpec]:
    """(decoder in eval mode, the ClipSpec it was trained with). With `clip_spec`, refuse a decoder
    trained against another CLIP (ClipMismatchError); a damaged folder is a CheckpointError."""
    folder = Path(folder)
    cfg = read_model_config(folder, DECODER)
    saved_spec = ClipSpec.load(folder)
    if cfg.embed_dim != saved_spec.embed_dim or cfg.text_width != saved_spec.text_width:
        raise CheckpointError(f"{folder}: {DECODER.config_file} and {SPEC_FILE} disagree on the CLIP's dimensions")
    if clip_spec is not None:
        check_same_clip(saved_spec, clip_spec, f"decoder {folder}")
    return load_model_folder(folder, DECODER, device, cfg), saved_spec
