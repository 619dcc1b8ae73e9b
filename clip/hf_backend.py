"""transformers `CLIPModel` towers behind the encoder's backend interface; a folder holding a
`CLIPTextModelWithProjection` alone (a Karlo text encoder converted without its image encoder)
gives a CLIP that encodes text only."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError
from torch import Tensor
from transformers import CLIPImageProcessor, CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer

from core.errors import CheckpointError

_WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")
_LOAD_ERRORS = (OSError, RuntimeError, ValueError, KeyError, SafetensorError)


class HfClipBackend:
    def __init__(
        self,
        model: CLIPModel | CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        processor: CLIPImageProcessor,
        weight_files: list[Path],
    ):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.processor = processor
        self.weight_files = weight_files
        config = model.config
        text_config = getattr(config, "text_config", config)
        self.embed_dim = int(config.projection_dim)
        self.image_size = int(config.vision_config.image_size) if hasattr(config, "vision_config") else None
        self.context_length = int(text_config.max_position_embeddings)
        self.text_width = int(text_config.hidden_size)
        self.mean = tuple(processor.image_mean)
        self.std = tuple(processor.image_std)

    def tokenize(self, captions: list[str]) -> tuple[Tensor, Tensor, list[bool]]:
        batch = self.tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        full = self.tokenizer(captions, truncation=False, verbose=False)["input_ids"]
        truncated = [len(ids) > self.context_length for ids in full]
        return batch["input_ids"], batch["attention_mask"].bool(), truncated

    def encode_text(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(projected pooled embedding, final-layer-norm token states), as in `get_text_features`."""
        out = self.model.text_model(input_ids=ids, attention_mask=mask.long())
        return self.model.text_projection(out.pooler_output), out.last_hidden_state

    def encode_image(self, pixels: Tensor) -> Tensor:
        out = self.model.vision_model(pixel_values=pixels)
        return self.model.visual_projection(out.pooler_output)

    def preprocess_images(self, images: list[Image.Image]) -> Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"]


def load_hf_clip(directory: str, device: torch.device) -> HfClipBackend:
    path = Path(directory)
    if not path.is_dir():
        raise CheckpointError(f"{path}: hf CLIP directory not found")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a saved CLIPModel (config.json missing)")
    weight_files = sorted(f for pattern in _WEIGHT_PATTERNS for f in path.glob(pattern))
    if any(f.suffix == ".safetensors" for f in weight_files):
        weight_files = [f for f in weight_files if f.suffix == ".safetensors"]  # what from_pretrained prefers
    if not weight_files:
        raise CheckpointError(f"{path}: no CLIPModel weights (model.safetensors) in the directory")
    has_tokenizer = (path / "tokenizer.json").is_file() or all(
        (path / name).is_file() for name in ("vocab.json", "merges.txt")
    )
    if not has_tokenizer:
        raise CheckpointError(f"{path}: no CLIP tokenizer (tokenizer.json or vocab.json + merges.txt)")
    kind = CLIPTextModelWithProjection if _model_type(path) == "clip_text_model" else CLIPModel
    try:
        # dtype: transformers 5 would otherwise load in whatever dtype the config names ("auto").
        model, info = kind.from_pretrained(
            path, dtype=torch.float32, local_files_only=True, output_loading_info=True
        )
        tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
        vision = getattr(model.config, "vision_config", None)
        image_size = int(vision.image_size) if vision is not None else None
        processor = _image_processor(path, image_size or 224)  # a text tower alone uses only its defaults
    except _LOAD_ERRORS as err:
        raise CheckpointError(f"{path}: cannot load hf CLIP: {type(err).__name__}: {err}") from None
    broken = sorted(info["missing_keys"]) + sorted(k[0] for k in info["mismatched_keys"])
    if broken:
        raise CheckpointError(f"{path}: weights missing or misshapen for {', '.join(broken[:5])}")
    crop = processor.crop_size
    if image_size is not None and (crop["height"], crop["width"]) != (image_size, image_size):
        raise CheckpointError(
            f"{path}: image processor crops to {crop['height']}x{crop['width']} but the model expects {image_size}"
        )
    return HfClipBackend(model.to(device), tokenizer, processor, weight_files)


def _model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path / 'config.json'}: cannot read ({err})") from None


def _image_processor(path: Path, image_size: int) -> CLIPImageProcessor:
    if (path / "preprocessor_config.json").is_file():
        return CLIPImageProcessor.from_pretrained(path, local_files_only=True)
    return CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
