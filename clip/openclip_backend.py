"""open_clip towers behind the encoder's backend interface.

Token states come from replaying open_clip's `CLIP.encode_text` step by step, so the pooled
embedding is exactly open_clip's and the per-token states are the ones before pooling.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import TextTransformer, text_global_pool
from PIL import Image
from safetensors import SafetensorError
from torch import Tensor, nn

from clip.spec import WEIGHT_SUFFIXES, is_local_path
from core.errors import CheckpointError

_BUILTIN_CONFIGS = Path(open_clip.__file__).parent / "model_configs"
_LOAD_ERRORS = (OSError, RuntimeError, ValueError, KeyError, SafetensorError, pickle.UnpicklingError)


@dataclass(frozen=True)
class _TextTower:
    """The parts of an open_clip text transformer that `encode_text` uses, wherever they live."""

    token_embedding: nn.Embedding
    positional_embedding: Tensor
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: Tensor | nn.Linear | None
    attn_mask: Tensor | None
    pool_type: str
    eos_id: int | None
    pad_id: int


class OpenClipBackend:
    def __init__(
        self, model: nn.Module, tokenizer: Any, preprocess: Any, embed_dim: int, weight_files: list[Path]
    ):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.tower = _text_tower(model)
        self.weight_files = weight_files
        self.embed_dim = embed_dim
        self.image_size = _square(model.visual.image_size)
        self.context_length = int(model.context_length)
        self.text_width = int(self.tower.transformer.width)
        self.mean = tuple(model.visual.preprocess_cfg["mean"])
        self.std = tuple(model.visual.preprocess_cfg["std"])

    def tokenize(self, captions: list[str]) -> tuple[Tensor, Tensor, list[bool]]:
        ids = self.tokenizer(captions, context_length=self.context_length)
        if isinstance(self.tokenizer, open_clip.SimpleTokenizer):
            eot = (ids == self.tokenizer.eot_token_id).int().argmax(dim=-1)
            mask = torch.arange(ids.shape[1])[None, :] <= eot[:, None]
        else:
            mask = ids != self.tower.pad_id
        truncated = [self._token_count(c) > self.context_length for c in captions]
        return ids, mask, truncated

    def _token_count(self, caption: str) -> int:
        if isinstance(self.tokenizer, open_clip.SimpleTokenizer):
            return len(self.tokenizer.encode(caption)) + 2  # start and end of text
        inner = getattr(self.tokenizer, "tokenizer", None)  # open_clip's wrappers of HF tokenizers
        return len(inner(caption)["input_ids"]) if inner is not None else 0

    def encode_text(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(projected pooled embedding, final-layer-norm token states), as in `CLIP.encode_text`."""
        t = self.tower
        cast_dtype = t.transformer.get_cast_dtype()
        x = t.token_embedding(ids).to(cast_dtype)
        x = x + t.positional_embedding.to(cast_dtype)
        x = t.transformer(x, attn_mask=t.attn_mask)
        tokens = t.ln_final(x)
        pooled = text_global_pool(tokens, ids, t.pool_type, eos_token_id=t.eos_id)
        if isinstance(t.text_projection, nn.Linear):
            pooled = t.text_projection(pooled)
        elif t.text_projection is not None:
            pooled = pooled @ t.text_projection
        return pooled, tokens

    def encode_image(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels)

    def preprocess_images(self, images: list[Image.Image]) -> Tensor:
        return torch.stack([self.preprocess(image) for image in images])


def load_open_clip(model: str, pretrained: str | None, device: torch.device) -> OpenClipBackend:
    name, config = _register_model(model)
    weight_files: list[Path] = []
    if pretrained is not None and is_local_path("open_clip", "pretrained", pretrained):
        weight_files = [_check_weights_file(Path(pretrained))]
    try:
        clip_model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device, weights_only=True
        )
        tokenizer = open_clip.get_tokenizer(name)
    except _LOAD_ERRORS as err:
        raise CheckpointError(
            f"cannot load open_clip model {model!r} with weights {pretrained!r}: {type(err).__name__}: {err}"
        ) from None
    return OpenClipBackend(clip_model, tokenizer, preprocess, int(config["embed_dim"]), weight_files)


def _register_model(model: str) -> tuple[str, dict[str, Any]]:
    """The registry name for `model`, adding a JSON config file to open_clip's registry if needed."""
    if model.startswith(("hf-hub:", "local-dir:")):
        raise CheckpointError(
            f"open_clip model {model!r}: pass a registered name or a model-config .json path"
        )
    if not is_local_path("open_clip", "model", model):
        config = open_clip.get_model_config(model)
        if config is None:
            raise CheckpointError(
                f"unknown open_clip model {model!r} (not a registered name or a .json config)"
            )
        return model, config
    path = Path(model)
    try:
        config = json.loads(path.read_text())
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read open_clip model config ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: open_clip model config is not valid JSON ({err})") from None
    missing = [
        k for k in ("embed_dim", "vision_cfg", "text_cfg") if not isinstance(config, dict) or k not in config
    ]
    if missing:
        raise CheckpointError(f"{path}: open_clip model config lacks {', '.join(missing)}")
    # open_clip registers configs by file stem in a process-wide table: refuse to shadow a built-in
    # model, and re-register when another file with the same stem was registered since.
    if (_BUILTIN_CONFIGS / path.name).exists():
        raise CheckpointError(
            f"{path}: rename this config, its name shadows open_clip's built-in {path.stem!r}"
        )
    if open_clip.get_model_config(path.stem) != config:
        try:
            open_clip.add_model_config(path)
        except (OSError, ValueError) as err:  # the rescan re-reads every file registered so far
            raise CheckpointError(f"{path}: open_clip could not rescan its config registry ({err})") from None
    return path.stem, config


def _check_weights_file(path: Path) -> Path:
    if path.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(
            f"{path}: unsupported weights file type (use one of {', '.join(WEIGHT_SUFFIXES)})"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    return path


def _text_tower(model: nn.Module) -> _TextTower:
    if isinstance(model, open_clip.CLIP):
        return _TextTower(
            model.token_embedding, model.positional_embedding, model.transformer, model.ln_final,
            model.text_projection, model.attn_mask, model.text_pool_type,
            getattr(model, "text_eos_id", None), 0,
        )  # fmt: skip
    text = getattr(model, "text", None)
    if (
        isinstance(model, open_clip.CustomTextCLIP)
        and isinstance(text, TextTransformer)
        and text.cls_emb is None
        and not text.use_pad_mask
    ):
        return _TextTower(
            text.token_embedding, text.positional_embedding, text.transformer, text.ln_final,
            text.text_projection, text.attn_mask, text.pool_type, text.eos_id, text.pad_id,
        )  # fmt: skip
    raise CheckpointError(
        f"caption token states are not available for open_clip {type(model).__name__} with text tower "
        f"{type(text).__name__}: use a CLIP or a CustomTextCLIP with a plain TextTransformer"
    )


def _square(size: int | tuple[int, int] | list[int]) -> int:
    if isinstance(size, int):
        return size
    height, width = size
    if height != width:
        raise CheckpointError(f"open_clip image size {height}x{width} is not square")
    return int(height)
