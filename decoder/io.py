"""A trained decoder on disk: model.safetensors + decoder_config.json + clip_spec.json in one folder."""

from __future__ import annotations

from pathlib import Path

import torch

from clip.spec import SPEC_FILE, ClipSpec, check_same_clip
from core.checkpoint import WEIGHTS_FILE, load_into, load_weights, read_json, save_model_folder
from core.errors import CheckpointError, ConfigError
from decoder.config import DecoderConfig
from decoder.model import Decoder

CONFIG_FILE = "decoder_config.json"


def save_decoder(folder: str | Path, decoder: Decoder, clip_spec: ClipSpec) -> Path:
    """Write the decoder's weights (float32, contiguous) with its config and the CLIP it was trained with."""
    if decoder.cfg.embed_dim != clip_spec.embed_dim or decoder.cfg.text_width != clip_spec.text_width:
        raise ConfigError(
            f"decoder expects CLIP embed_dim {decoder.cfg.embed_dim} / text_width {decoder.cfg.text_width}, "
            f"but the given ClipSpec has {clip_spec.embed_dim} / {clip_spec.text_width}")
    state = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in decoder.state_dict().items()}
    return save_model_folder(folder, state, {CONFIG_FILE.removesuffix(".json"): decoder.cfg,
                                             SPEC_FILE.removesuffix(".json"): clip_spec.reference()})


def load_decoder(folder: str | Path, clip_spec: ClipSpec | None = None,
                 device: str | torch.device = "cpu") -> tuple[Decoder, ClipSpec]:
    """(decoder in eval mode, the ClipSpec it was trained with). With `clip_spec`, refuse a decoder
    trained against another CLIP (ClipMismatchError); a damaged folder is a CheckpointError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"decoder folder {folder} does not exist")
    try:
        cfg = DecoderConfig.parse(read_json(folder / CONFIG_FILE))
    except ConfigError as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {err}") from None
    saved_spec = ClipSpec.load(folder)
    if cfg.embed_dim != saved_spec.embed_dim or cfg.text_width != saved_spec.text_width:
        raise CheckpointError(f"{folder}: decoder_config.json and clip_spec.json disagree on the CLIP's dimensions")
    if clip_spec is not None:
        check_same_clip(saved_spec, clip_spec, f"decoder {folder}")
    decoder = Decoder(cfg)
    load_into(decoder, load_weights(folder / WEIGHTS_FILE), f"decoder weights {folder / WEIGHTS_FILE}")
    return decoder.to(device).eval(), saved_spec
