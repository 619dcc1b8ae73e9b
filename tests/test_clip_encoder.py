import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_clips import (
    CONTEXT_LENGTH,
    EMBED_DIM,
    IMAGE_SIZE,
    OPEN_CLIP_CONFIG,
    TEXT_WIDTH,
    make_open_clip,
    shared_hf_clip,
    shared_open_clip,
)

from clip.encoder import ClipEncoder, load_encoder
from core.errors import CheckpointError, ConfigError

CAPTIONS = [
    "a photo of a cat",
    "a red cube on a blue sphere",
    "x",
    "two dogs playing in the snow",
    "an astronaut",
]
LONG_CAPTION = "a very long caption " * 10
EOT = 49407


@pytest.fixture(scope="session")
def specs(tmp_path_factory):
    return {"open_clip": shared_open_clip(tmp_path_factory), "hf": shared_hf_clip(tmp_path_factory)}


@pytest.fixture(scope="session")
def encoders(specs):
    return {kind: load_encoder(spec) for kind, spec in specs.items()}


@pytest.fixture(params=["open_clip", "hf"])
def encoder(request, encoders) -> ClipEncoder:
    return encoders[request.param]


def gradient_image(size: int) -> Image.Image:
    """A smooth image, so that PIL's and torch's resampling agree closely."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack(
        [ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), 255 - ramp[None, :].repeat(size, 0)],
        -1,
    )
    return Image.fromarray(rgb.astype(np.uint8))


def as_pixels(images: list[Image.Image]) -> torch.Tensor:
    arrays = np.stack([np.asarray(image, dtype=np.float32) / 127.5 - 1 for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2)


def test_text_shapes_norms_and_dtypes(encoder):
    out = encoder.encode_text(CAPTIONS)
    assert out.embeds.shape == (5, EMBED_DIM)
    assert out.tokens.shape == (5, CONTEXT_LENGTH, TEXT_WIDTH)
    assert out.mask.shape == (5, CONTEXT_LENGTH) and out.mask.dtype == torch.bool
    assert out.embeds.dtype == out.tokens.dtype == torch.float32
    torch.testing.assert_close(out.embeds.norm(dim=-1), torch.ones(5))
    assert encoder.context_length == CONTEXT_LENGTH


def test_mask_covers_start_through_end_of_text(encoder):
    ids, truncated = encoder.tokenize(CAPTIONS)
    mask = encoder.encode_text(CAPTIONS).mask
    assert truncated == [False] * 5
    for row_ids, row_mask in zip(ids, mask):
        length = int(row_mask.sum())
        assert row_mask[:length].all() and not row_mask[length:].any()
        assert row_ids[length - 1] == EOT and (row_ids[: length - 1] != EOT).all()
    assert mask.sum(dim=1).tolist()[2] == 3  # start, "x", end


def test_truncation_is_reported(encoder):
    ids, truncated = encoder.tokenize([LONG_CAPTION, "short"])
    assert truncated == [True, False]
    assert ids[0, -1] == EOT
    assert encoder.encode_text([LONG_CAPTION]).mask.all()


def test_text_is_deterministic_across_batch_sizes(encoder):
    whole = encoder.encode_text(CAPTIONS, batch_size=5)
    again = encoder.encode_text(CAPTIONS, batch_size=5)
    pieces = encoder.encode_text(CAPTIONS, batch_size=2)
    assert torch.equal(whole.embeds, again.embeds) and torch.equal(whole.tokens, again.tokens)
    torch.testing.assert_close(pieces.embeds, whole.embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(pieces.tokens, whole.tokens, atol=1e-5, rtol=0)


def test_open_clip_embeds_equal_encode_text(encoders):
    encoder = encoders["open_clip"]
    ids, _ = encoder.tokenize(CAPTIONS)
    with torch.inference_mode():
        expected = encoder.backend.model.encode_text(ids, normalize=True)
    assert torch.equal(encoder.encode_text(CAPTIONS, batch_size=5).embeds, expected)


def test_hf_embeds_equal_get_text_features(encoders):
    encoder = encoders["hf"]
    batch = encoder.backend.tokenizer(
        CAPTIONS, padding="max_length", max_length=CONTEXT_LENGTH, return_tensors="pt"
    )
    with torch.inference_mode():  # transformers 5 returns a ModelOutput here, not a tensor
        features = encoder.backend.model.get_text_features(**batch).pooler_output
    torch.testing.assert_close(encoder.encode_text(CAPTIONS).embeds, F.normalize(features, dim=-1))


def test_custom_text_clip_matches_encode_text(tmp_path):
    spec = make_open_clip(tmp_path, name="tiny-custom-text", custom_text=True)
    encoder = load_encoder(spec)
    assert isinstance(encoder.backend.model, open_clip.CustomTextCLIP)
    ids, _ = encoder.tokenize(CAPTIONS)
    with torch.inference_mode():
        expected = encoder.backend.model.encode_text(ids, normalize=True)
    assert torch.equal(encoder.encode_text(CAPTIONS).embeds, expected)


def test_configs_with_the_same_file_name_do_not_clash(specs, encoders, tmp_path):
    # open_clip registers JSON configs by file stem in one process-wide table.
    shorter = {**OPEN_CLIP_CONFIG["text_cfg"], "context_length": 8}
    other = make_open_clip(tmp_path, text_cfg=shorter)
    assert Path(other.model).name == Path(specs["open_clip"].model).name
    assert load_encoder(other).encode_text(CAPTIONS).tokens.shape[1] == 8
    assert load_encoder(specs["open_clip"]).encode_text(CAPTIONS).tokens.shape[1] == CONTEXT_LENGTH


def test_images_and_pixels_agree(encoder):
    images = [gradient_image(IMAGE_SIZE), gradient_image(IMAGE_SIZE).rotate(90)]
    from_pil = encoder.encode_image(images)
    assert from_pil.shape == (2, EMBED_DIM) and from_pil.dtype == torch.float32
    torch.testing.assert_close(from_pil.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(encoder.encode_pixels(as_pixels(images)), from_pil, atol=1e-5, rtol=0)
    torch.testing.assert_close(encoder.encode_image(images, batch_size=1), from_pil, atol=1e-5, rtol=0)


def test_pixels_are_resized_like_pil(encoder):
    large = [gradient_image(2 * IMAGE_SIZE)]
    from_pil, from_tensor = encoder.encode_image(large), encoder.encode_pixels(as_pixels(large))
    assert F.cosine_similarity(from_pil, from_tensor).item() > 0.999


def test_outputs_can_feed_a_trained_model(encoder):
    layer = torch.nn.Linear(EMBED_DIM, 1)
    layer(encoder.encode_text(CAPTIONS[:2]).embeds).sum().backward()
    assert layer.weight.grad is not None


def test_bfloat16_autocast_returns_float32(specs):
    reference = load_encoder(specs["open_clip"])
    fast = load_encoder(specs["open_clip"], dtype=torch.bfloat16)
    out = fast.encode_text(CAPTIONS)
    assert out.embeds.dtype == out.tokens.dtype == torch.float32
    assert F.cosine_similarity(out.embeds, reference.encode_text(CAPTIONS).embeds).min() > 0.98
    with pytest.raises(ConfigError, match="dtype"):
        load_encoder(specs["open_clip"], dtype=torch.float64)


def test_bad_inputs_are_clear_errors(encoder):
    with pytest.raises(ConfigError, match="no captions"):
        encoder.encode_text([])
    with pytest.raises(ConfigError, match="single string"):
        encoder.encode_text("a cat")
    with pytest.raises(ConfigError, match=r"\[B, 3, H, W\]"):
        encoder.encode_pixels(torch.zeros(3, 32, 32))


def test_spec_mismatches_name_both_values(specs):
    with pytest.raises(CheckpointError, match="embed_dim=64 but the loaded model has 32"):
        load_encoder(specs["hf"].override(embed_dim=64))
    with pytest.raises(CheckpointError, match="sha256"):
        load_encoder(specs["open_clip"].override(weights_sha256="0" * 64))


def test_open_clip_loading_errors(specs, tmp_path):
    spec = specs["open_clip"]
    with pytest.raises(CheckpointError, match="cannot read"):
        load_encoder(spec.override(model=str(tmp_path / "absent.json")))
    with pytest.raises(CheckpointError, match="weights file not found"):
        load_encoder(spec.override(pretrained=str(tmp_path / "absent.safetensors")))
    (tmp_path / "broken.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_encoder(spec.override(model=str(tmp_path / "broken.json")))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(Path(spec.pretrained).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="SafetensorError"):
        load_encoder(spec.override(pretrained=str(truncated), weights_sha256=None))
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": torch.nn.Linear(2, 2)}, pickled)  # a module object: needs unpickling code
    with pytest.raises(CheckpointError, match="UnpicklingError"):
        load_encoder(spec.override(pretrained=str(pickled), weights_sha256=None))


def test_open_clip_loads_a_pt_state_dict(specs, encoders, tmp_path):
    from safetensors.torch import load_file

    spec = specs["open_clip"]
    torch.save(load_file(spec.pretrained), tmp_path / "weights.pt")
    encoder = load_encoder(spec.override(pretrained=str(tmp_path / "weights.pt"), weights_sha256=None))
    assert torch.equal(
        encoder.encode_text(CAPTIONS).embeds, encoders["open_clip"].encode_text(CAPTIONS).embeds
    )


def test_hf_loading_errors(specs, tmp_path):
    spec = specs["hf"]
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(spec.override(model=str(tmp_path / "absent")))
    broken = Path(shutil.copytree(spec.model, tmp_path / "broken"))
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot load hf CLIP"):
        load_encoder(spec.override(model=str(broken), weights_sha256=None))
    (broken / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no CLIP tokenizer"):
        load_encoder(spec.override(model=str(broken), weights_sha256=None))


def test_hf_image_processor_built_from_config(specs, encoders, tmp_path):
    folder = Path(shutil.copytree(specs["hf"].model, tmp_path / "no_processor"))
    (folder / "preprocessor_config.json").unlink()
    encoder = load_encoder(specs["hf"].override(model=str(folder)))
    images = [gradient_image(IMAGE_SIZE)]
    torch.testing.assert_close(encoder.encode_image(images), encoders["hf"].encode_image(images))
