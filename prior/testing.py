"""Tiny priors, fake CLIP specs and fake embedding shards for tests (no CLIP is run)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from clip.spec import ClipSpec
from data.shapes import canonical_caption, sample_attributes
from prior.config import PriorConfig
from prior.model import DiffusionPrior

DIM, LENGTH, WIDTH = 32, 16, 32


def fake_spec(weights_sha256: str = "a" * 64, **changes) -> ClipSpec:
    """A ClipSpec naming a CLIP that does not exist; enough for shapes and identity checks."""
    data = {"backend": "open_clip", "model": "/nonexistent/tiny.json", "pretrained": "/nonexistent/tiny.safetensors",
            "weights_sha256": weights_sha256, "embed_dim": DIM, "image_size": 32, "context_length": LENGTH,
            "text_width": WIDTH}
    return ClipSpec.parse({**data, **changes})


def tiny_config(**changes) -> PriorConfig:
    base = {"embed_dim": DIM, "context_length": LENGTH, "text_width": WIDTH, "heads": 2, "head_dim": 16, "layers": 1}
    return PriorConfig.parse({**base, **changes})


def tiny_prior(seed: int = 0, spec: ClipSpec | None = None, **changes) -> DiffusionPrior:
    torch.manual_seed(seed)
    prior = DiffusionPrior(tiny_config(**changes), clip_spec=spec)
    if prior.config.normalise == "standardise":
        prior.set_stats(torch.full((DIM,), 0.01), torch.full((DIM,), 0.15))
    return prior.eval()


def fake_pairs(n: int, seed: int = 0, dim: int = DIM, length: int = LENGTH, width: int = WIDTH) -> dict[str, torch.Tensor]:
    """Shard-like tensors: image embeddings correlated with the text embeddings, padded token masks."""
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    image = F.normalize(text + 0.7 * F.normalize(torch.randn(n, dim, generator=g), dim=-1), dim=-1)
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    tokens = torch.randn(n, length, width, generator=g) * mask[..., None]
    return {"image_embeds": image, "text_embeds": text, "text_tokens": tokens, "text_mask": mask}


def fake_text(n: int, seed: int = 0) -> SimpleNamespace:
    """A TextEncoding-like object for n captions."""
    pairs = fake_pairs(n, seed)
    return SimpleNamespace(embeds=pairs["text_embeds"], tokens=pairs["text_tokens"], mask=pairs["text_mask"])


def shapes_captions(n: int, seed: int = 0) -> list[str]:
    return [canonical_caption(sample_attributes(seed, i)) for i in range(n)]


def write_fake_shards(folder: str | Path, spec: ClipSpec, n: int, seed: int = 0, split: str = "train"):
    """A shard set of n fake pairs with shapes captions (clip.shards.write_shards)."""
    from clip.shards import write_shards

    pairs = fake_pairs(n, seed, spec.embed_dim, spec.context_length, spec.text_width)
    return write_shards(folder, spec, pairs, shapes_captions(n, seed), [f"{split}-{i}" for i in range(n)],
                        dataset_fingerprint="fake", split=split, shard_size=max(1, n // 2))
