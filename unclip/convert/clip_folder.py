"""Karlo's CLIP as a self-contained model folder: transformers weights, tokenizer and image processor
copied in, the ClipSpec pointing at the folder itself (".") with the weights' sha256 pinned.

diffusers keeps the two towers apart (UnCLIPPipeline's CLIPTextModelWithProjection, the image
variations pipeline's CLIPVisionModelWithProjection); given both they become one CLIPModel, given the
text tower alone a CLIP that encodes text only. The embeddings stay raw (`normalise` false): Karlo's
prior statistics and decoder were fitted to CLIP's unnormalised projections.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from clip.spec import ClipSpec, sha256_files
from core.errors import CheckpointError
from unclip.convert.layout import LayoutError

log = logging.getLogger("unclip.convert")
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError)


def load_text_encoder(folder: Path):
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    try:
        model = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder", dtype=torch.float32)
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    except _LOAD_ERRORS as err:
        raise CheckpointError(f"{folder}: cannot load the text encoder or tokenizer: {err}") from None
    return model.eval(), tokenizer


def image_encoder_folder(given: Path | None, pipeline: Path) -> Path | None:
    """The CLIPVisionModelWithProjection folder: `given` (a model folder, or a pipeline folder holding
    image_encoder/), else the pipeline's own image_encoder/ where there is one (an exported cascade's)."""
    if given is None:
        return pipeline / "image_encoder" if (pipeline / "image_encoder" / "config.json").is_file() else None
    if not given.is_dir():
        raise CheckpointError(f"--image-encoder {given} does not exist")
    folder = given / "image_encoder" if (given / "image_encoder").is_dir() else given
    try:
        kind = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        kind = None
    if kind != "clip_vision_model":
        raise LayoutError(f"--image-encoder {given}: not a CLIPVisionModelWithProjection folder (nor a pipeline "
                          "folder with image_encoder/)")
    return folder


def load_image_encoder(folder: Path):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    try:
        model = CLIPVisionModelWithProjection.from_pretrained(folder, dtype=torch.float32).eval()
        for candidate in (folder, folder.parent / "feature_extractor"):
            if (candidate / "preprocessor_config.json").is_file():
                return model, CLIPImageProcessor.from_pretrained(candidate)
    except _LOAD_ERRORS as err:
        raise CheckpointError(f"{folder}: cannot load the image encoder: {err}") from None
    size = model.config.image_size
    return model, CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def save_clip_folder(out: Path, text_encoder, tokenizer, vision=None, processor=None) -> ClipSpec:
    """Write the CLIP into `out` and return its (relative) spec, also saved there."""
    text = text_encoder.config
    if tokenizer.model_max_length != text.max_position_embeddings:
        raise LayoutError(f"text_encoder: the tokenizer pads to {tokenizer.model_max_length} tokens but the text "
                          f"encoder has {text.max_position_embeddings} positions")
    model = text_encoder if vision is None else joined_clip(text_encoder, vision)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if processor is not None:
        processor.save_pretrained(out)
    spec = ClipSpec(backend="hf", model=".", weights_sha256=sha256_files(sorted(out.glob("model*.safetensors"))),
                    embed_dim=text.projection_dim, image_size=vision.config.image_size if vision is not None else None,
                    context_length=text.max_position_embeddings, text_width=text.hidden_size, normalise=False)
    spec.save(out)
    if vision is None:
        log.info("clip: text tower only (no --image-encoder): text to image works, variations and best-of decodes do not")
    return spec


def joined_clip(text_encoder, vision):
    """One CLIPModel holding both towers (its logit scale, unused by generation, at CLIP's initial value)."""
    from transformers import CLIPConfig, CLIPModel

    if vision.config.projection_dim != text_encoder.config.projection_dim:
        raise LayoutError(f"image encoder: projects to {vision.config.projection_dim} dimensions, the text encoder "
                          f"to {text_encoder.config.projection_dim}: not the same CLIP")
    config = CLIPConfig(text_config=text_encoder.config.to_dict(), vision_config=vision.config.to_dict(),
                        projection_dim=text_encoder.config.projection_dim)
    model = CLIPModel(config).eval()
    state = {**text_encoder.state_dict(), **vision.state_dict(), "logit_scale": model.logit_scale.detach()}
    model.load_state_dict(state, strict=True)
    return model


def towers_of(folder: Path):
    """(text encoder, tokenizer, image encoder or None, image processor or None) of a CLIP folder, for export."""
    from transformers import (
        CLIPImageProcessor,
        CLIPModel,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    tokenizer = CLIPTokenizer.from_pretrained(folder)
    if json.loads((folder / "config.json").read_text()).get("model_type") == "clip_text_model":
        return CLIPTextModelWithProjection.from_pretrained(folder, dtype=torch.float32).eval(), tokenizer, None, None
    both = CLIPModel.from_pretrained(folder, dtype=torch.float32)
    text = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(both.config.text_config.to_dict()))
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(both.config.vision_config.to_dict()))
    state = both.state_dict()
    for tower in (text, vision):
        tower.load_state_dict({k: state[k] for k in tower.state_dict()}, strict=True)
    return text.eval(), tokenizer, vision.eval(), CLIPImageProcessor.from_pretrained(folder)
