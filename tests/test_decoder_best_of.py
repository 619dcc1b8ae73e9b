"""Best-of-n decoding: candidate 0 is the plain decode, every candidate is its own seeded decode, and
the kept one has the largest cosine between its CLIP embedding and the conditioning embedding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.candidates import candidate_seeds
from core.errors import ConfigError
from decoder.best_of import decode_best_of
from decoder.sample import Caption, decode
from decoder.testing import DIM, SIZE, fake_caption, fake_image_embeds, tiny_decoder


@pytest.fixture(scope="module")
def decoder():
    return tiny_decoder(seed=5)


def fake_encode(images: torch.Tensor) -> torch.Tensor:
    """A fixed random projection of the pooled pixels: a stand-in CLIP image encoder."""
    weight = torch.randn(3 * 16, DIM, generator=torch.Generator().manual_seed(9))
    return F.adaptive_avg_pool2d(images, 4).flatten(1) @ weight


def test_best_of_one_is_the_plain_decode(decoder):
    z, text = fake_image_embeds(3), fake_caption(3)
    plain = decode(decoder, z, text, [4, 5, 6], steps=4)
    best = decode_best_of(decoder, fake_encode, z, text, [4, 5, 6], 1, steps=4)
    assert torch.equal(best.images, plain)
    assert best.candidates.shape == (3, 1, 3, SIZE, SIZE) and best.index.tolist() == [0, 0, 0]


def test_candidates_are_seeded_decodes_and_the_closest_is_kept(decoder):
    z, text = fake_image_embeds(2, seed=3), fake_caption(2, seed=4)
    best = decode_best_of(decoder, fake_encode, z, text, [10, 11], 3, steps=4, batch_size=2)
    assert best.candidates.shape == (2, 3, 3, SIZE, SIZE)
    seeds = candidate_seeds([10, 11], 3)
    for b in range(2):
        for k in range(3):
            alone = decode(decoder, z[b:b + 1], Caption(text.embeds[b:b + 1], text.tokens[b:b + 1], text.mask[b:b + 1]),
                           [seeds[3 * b + k]], steps=4)
            assert torch.allclose(best.candidates[b, k], alone[0], atol=1e-5)
    assert not torch.allclose(best.candidates[0, 0], best.candidates[0, 1], atol=1e-3)
    cosines = F.cosine_similarity(fake_encode(best.candidates.flatten(0, 1)).view(2, 3, DIM), z[:, None], dim=-1)
    assert torch.allclose(best.scores, cosines, atol=1e-5)
    assert best.index.tolist() == cosines.argmax(1).tolist()
    assert torch.equal(best.images, best.candidates[torch.arange(2), best.index])


def test_wrong_requests_are_config_errors(decoder):
    z, text = fake_image_embeds(2), fake_caption(2)
    with pytest.raises(ConfigError, match="at least 1"):
        decode_best_of(decoder, fake_encode, z, text, [0, 1], 0, steps=2)
    with pytest.raises(ConfigError, match="x_T"):
        decode_best_of(decoder, fake_encode, z, text, [0, 1], 2, steps=2, x_T=torch.zeros(2, 3, SIZE, SIZE))
    with pytest.raises(ConfigError, match="seeds"):
        decode_best_of(decoder, fake_encode, z, text, [0], 2, steps=2)
