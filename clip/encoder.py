"""A frozen CLIP with one interface for the open_clip and transformers backends.

Captions become an L2-normalised embedding plus the final-layer-norm token states before
projection (what DALL-E 2 feeds the prior and decoder); images, either PIL images or our own
[-1, 1] tensors, become L2-normalised embeddings. A spec with `normalise` false (Karlo's CLIP)
gives the raw projected embeddings instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from clip.spec import ClipSpec, is_local_path, sha256_files
from core.errors import CheckpointError, ConfigError

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class ClipBackend(Protocol):
    """What `ClipEncoder` needs from a backend; `openclip_backend` and `hf_backend` provide it."""

    embed_dim: int
    image_size: int | None  # None: no image tower
    context_length: int
    text_width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weight_files: list[Path]

    def tokenize(self, captions: list[str]) -> tuple[Tensor, Tensor, list[bool]]: ...
    def encode_text(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]: ...
    def encode_image(self, pixels: Tensor) -> Tensor: ...
    def preprocess_images(self, images: list[Image.Image]) -> Tensor: ...


@dataclass(frozen=True)
class TextEncoding:
    """Captions encoded by CLIP: `embeds` [B, D] unit norm, `tokens` [B, L, W], `mask` [B, L] (True = real token)."""

    embeds: Tensor
    tokens: Tensor
    mask: Tensor


class ClipEncoder:
    """A frozen CLIP on one device. Outputs are float32 on that device and safe to use in autograd."""

    def __init__(self, spec: ClipSpec, backend: ClipBackend, device: torch.device, dtype: torch.dtype):
        self.spec = spec
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self._mean = torch.tensor(backend.mean, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(backend.std, device=device).view(1, -1, 1, 1)

    @property
    def context_length(self) -> int:
        return self.spec.context_length

    def tokenize(self, captions: Sequence[str]) -> tuple[Tensor, list[bool]]:
        """Token ids [B, L] from the backend's own tokenizer, and which captions were truncated."""
        ids, _, truncated = self.backend.tokenize(_caption_list(captions))
        return ids, truncated

    def encode_text(self, captions: Sequence[str], batch_size: int = 256) -> TextEncoding:
        captions = _caption_list(captions)
        _check_batch_size(batch_size)
        embeds, tokens, mask = self._encode_text(captions, batch_size)
        # inference tensors cannot be saved for backward: clone them so training code can use them.
        return TextEncoding(embeds.clone(), tokens.clone(), mask.clone())

    def encode_image(self, images: Sequence[Image.Image], batch_size: int = 256) -> Tensor:
        """Unit-norm embeddings [B, D] of PIL images, preprocessed the backend's own way."""
        images = list(images)
        if not images:
            raise ConfigError("encode_image needs at least one image")
        self._check_image_tower()
        _check_batch_size(batch_size)
        return self._encode_images(images, batch_size).clone()

    def encode_pixels(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Unit-norm embeddings [B, D] of images [B, 3, H, W] in [-1, 1], resized and normalised with torch ops."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0:
            raise ConfigError(
                f"encode_pixels expects a non-empty [B, 3, H, W] tensor, got shape {tuple(x.shape)}"
            )
        _check_batch_size(batch_size)
        self._check_image_tower()
        return self._encode_pixels(x, batch_size).clone()

    def _check_image_tower(self) -> None:
        if not self.spec.has_image_tower:
            raise ConfigError(f"the CLIP {self.spec.model} has no image tower (a Karlo text encoder converted "
                              "without --image-encoder), so it cannot embed images: convert it again with "
                              "`python -m unclip.convert from-diffusers ... --image-encoder DIR`")

    def _unit(self, embeds: Tensor) -> Tensor:
        return F.normalize(embeds, dim=-1) if self.spec.normalise else embeds
    @torch.inference_mode()
    def _encode_text(self, captions: list[str], batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
        ids, mask, _ = self.backend.tokenize(captions)
        ids, mask = ids.to(self.device), mask.to(self.device)
        embeds, tokens = [], []
        for batch_ids, batch_mask in zip(ids.split(batch_size), mask.split(batch_size)):
            with self._autocast():
                pooled, states = self.backend.encode_text(batch_ids, batch_mask)
            embeds.append(self._unit(pooled.float()))
            tokens.append(states.float())
        return torch.cat(embeds), torch.cat(tokens), mask

    @torch.inference_mode()
    def _encode_images(self, images: list[Image.Image], batch_size: int) -> Tensor:
        chunks = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        return torch.cat(
            [self._embed_pixels(self.backend.preprocess_images(c).to(self.device)) for c in chunks]
        )

    @torch.inference_mode()
    def _encode_pixels(self, x: Tensor, batch_size: int) -> Tensor:
        out = []
        for chunk in x.split(batch_size):
            unit = resize_and_crop((chunk.to(self.device, torch.float32) + 1) / 2, self.spec.image_size)
            out.append(self._embed_pixels((unit - self._mean) / self._std))
        return torch.cat(out)

    def _embed_pixels(self, pixels: Tensor) -> Tensor:
        if self.device.type == "cpu":  # channels-last: faster oneDNN convolutions (docs/experiments/clip.md)
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            features = self.backend.encode_image(pixels)
        return self._unit(features.float())

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def resize_and_crop(x: Tensor, size: int) -> Tensor:
    """Shortest side to `size` (bicubic, antialiased) then a centre crop, like CLIP's PIL preprocessing."""
    height, width = x.shape[-2:]
    if (height, width) == (size, size):
        return x
    scale = size / min(height, width)
    new_h, new_w = max(size, int(height * scale)), max(size, int(width * scale))
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = round((new_h - size) / 2), round((new_w - size) / 2)
    return x[..., top : top + size, left : left + size]


def load_encoder(
    spec: ClipSpec, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> ClipEncoder:
    """Load the CLIP `spec` describes, checking its weights' hash and dimensions against the spec."""
    device = torch.device(device)
    _check_dtype(dtype, device)
    backend = _load_backend(spec.backend, spec.model, spec.pretrained, device)
    if spec.weights_sha256 is not None:
        if not backend.weight_files:
            raise CheckpointError(
                f"CLIP spec pins weights {spec.weights_sha256[:12]}… but {spec.model} has no local weights"
            )
        actual = sha256_files(backend.weight_files)
        if actual != spec.weights_sha256:
            files = ", ".join(str(f) for f in backend.weight_files)
            raise CheckpointError(
                f"CLIP weights {files} have sha256 {actual[:12]}… but the spec expects {spec.weights_sha256[:12]}…"
            )
    for field in ("embed_dim", "image_size", "context_length", "text_width"):
        expected, loaded = getattr(spec, field), getattr(backend, field)
        if expected != loaded:
            raise CheckpointError(
                f"CLIP {spec.model}: spec says {field}={expected} but the loaded model has {loaded}"
            )
    return ClipEncoder(spec, backend, device, dtype)


def resolve_spec(backend: str, model: str | Path, pretrained: str | Path | None = None) -> ClipSpec:
    """The spec of a CLIP: its dimensions read from the loaded model, its local weights hashed."""
    if backend not in ("open_clip", "hf"):
        raise ConfigError(f"unknown CLIP backend {backend!r}; choose open_clip or hf")
    model = _absolute(backend, "model", str(model))
    pretrained = None if pretrained is None else _absolute(backend, "pretrained", str(pretrained))
    loaded = _load_backend(backend, model, pretrained, torch.device("cpu"))
    return ClipSpec.parse(
        {
            "backend": backend,
            "model": model,
            "pretrained": pretrained,
            "weights_sha256": sha256_files(loaded.weight_files) if loaded.weight_files else None,
            "embed_dim": loaded.embed_dim,
            "image_size": loaded.image_size,
            "context_length": loaded.context_length,
            "text_width": loaded.text_width,
        }
    )


def _load_backend(backend: str, model: str, pretrained: str | None, device: torch.device) -> ClipBackend:
    # Imported on demand: each backend library takes seconds to import and only one is in use.
    if backend == "open_clip":
        from clip.openclip_backend import load_open_clip

        return load_open_clip(model, pretrained, device)
    from clip.hf_backend import load_hf_clip

    return load_hf_clip(model, device)


def _absolute(backend: str, field: str, value: str) -> str:
    return str(Path(value).expanduser().resolve()) if is_local_path(backend, field, value) else value


def _caption_list(captions: Sequence[str]) -> list[str]:
    if isinstance(captions, str):
        raise ConfigError("pass a list of captions, not a single string")
    captions = list(captions)
    if not captions:
        raise ConfigError("no captions to encode")
    if not all(isinstance(c, str) for c in captions):
        raise ConfigError("captions must be strings")
    return captions


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")


def _check_dtype(dtype: torch.dtype, device: torch.device) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise ConfigError(f"unsupported CLIP dtype {dtype}; choose one of {SUPPORTED_DTYPES}")
    if dtype != torch.float32 and not torch.amp.is_autocast_available(device.type):
        raise ConfigError(f"dtype {dtype} needs torch.autocast, which device type {device.type!r} lacks")
