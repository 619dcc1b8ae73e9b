"""Tiny random CLIPs of both backends, saved the way real ones are, for tests.

Import as `from tiny_clips import ...` (pytest puts tests/ on sys.path). `shared_open_clip` and
`shared_hf_clip` build each model once per test session; use them from session fixtures:

    @pytest.fixture(scope="session")
    def clip_spec(tmp_path_factory):
        return shared_open_clip(tmp_path_factory)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from clip.encoder import load_encoder, resolve_spec
from clip.shards import write_shards
from clip.spec import ClipSpec
from data.shapes import canonical_caption, render, sample_attributes

EMBED_DIM = 32
IMAGE_SIZE = 32
CONTEXT_LENGTH = 16
TEXT_WIDTH = 32
VOCAB_SIZE = 49408  # the size of CLIP's BPE vocabulary, so the real tokenizers work

OPEN_CLIP_CONFIG = {
    "embed_dim": EMBED_DIM,
    "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": 8, "width": 32, "head_width": 16, "layers": 1},
    "text_cfg": {
        "context_length": CONTEXT_LENGTH,
        "vocab_size": VOCAB_SIZE,
        "width": TEXT_WIDTH,
        "heads": 2,
        "layers": 1,
    },
}

_shared: dict[str, ClipSpec] = {}


def make_open_clip(
    directory: str | Path, seed: int = 0, name: str = "tiny-open-clip", **config_changes
) -> ClipSpec:
    """Save a random open_clip CLIP as `<name>.json` + `<name>.safetensors` in `directory`; return its spec.

    `config_changes` replace top-level config keys (e.g. `custom_text=True`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {**OPEN_CLIP_CONFIG, **config_changes}
    config_path = directory / f"{name}.json"
    config_path.write_text(json.dumps(config, indent=2))
    model_class = open_clip.CustomTextCLIP if config.get("custom_text") else open_clip.CLIP
    model_config = {k: v for k, v in config.items() if k != "custom_text"}
    torch.manual_seed(seed)
    model = model_class(**model_config)
    weights_path = directory / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights_path)
    return resolve_spec("open_clip", config_path, weights_path)


def make_hf_clip(directory: str | Path, seed: int = 0, embed_dim: int = EMBED_DIM,
                 text_changes: dict | None = None) -> ClipSpec:
    """Save a random transformers CLIPModel, its tokenizer and image processor in `directory`; return its spec.

    `text_changes` replace settings of the text tower (e.g. a wider `hidden_size`)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    directory = Path(directory)
    tower = {"hidden_size": TEXT_WIDTH, "intermediate_size": 64, "projection_dim": embed_dim}
    tower |= {"num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": VOCAB_SIZE, "max_position_embeddings": CONTEXT_LENGTH,
                     **(text_changes or {})},
        vision_config={**tower, "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=embed_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    clip_tokenizer().save_pretrained(directory)
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=square).save_pretrained(directory)
    return resolve_spec("hf", directory)


def clip_tokenizer():
    """A transformers CLIPTokenizer built offline from open_clip's bundled BPE vocabulary (same ids as OpenAI's)."""
    from transformers import CLIPTokenizer

    bpe = open_clip.SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {special.get(token, token): index for token, index in bpe.encoder.items()}
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.__getitem__)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CONTEXT_LENGTH)


def shared_open_clip(factory: pytest.TempPathFactory) -> ClipSpec:
    """The session's tiny open_clip CLIP, built on first use."""
    if "open_clip" not in _shared:
        _shared["open_clip"] = make_open_clip(factory.mktemp("tiny_open_clip"))
    return _shared["open_clip"]


def shared_hf_clip(factory: pytest.TempPathFactory) -> ClipSpec:
    """The session's tiny transformers CLIP, built on first use."""
    if "hf" not in _shared:
        _shared["hf"] = make_hf_clip(factory.mktemp("tiny_hf_clip"))
    return _shared["hf"]


def make_shape_shards(folder, spec: ClipSpec, split: str, count: int, image_size: int = 32):
    """Embedding shards (with images) of `count` shapes images, embedded by the CLIP `spec`."""
    encoder = load_encoder(spec)
    attrs = [sample_attributes(0 if split == "train" else 1, i) for i in range(count)]
    images = [render(a, image_size) for a in attrs]
    captions = [canonical_caption(a) for a in attrs]
    text = encoder.encode_text(captions)
    tensors = {"image_embeds": encoder.encode_image(images), "text_embeds": text.embeds, "text_tokens": text.tokens,
               "text_mask": text.mask,
               "images": torch.from_numpy(np.stack([np.asarray(i).transpose(2, 0, 1) for i in images]))}
    return write_shards(folder, spec, tensors, captions, [f"k{i}" for i in range(count)], split=split,
                        image_size=image_size)
