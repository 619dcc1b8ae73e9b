"""Generic metrics on known cases: KID/FID of a set against itself and against noise, retrieval at
its ceiling and at chance, CLIP score's definition, and the probes' dispatch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.metrics import caption_retrieval, clip_score, embed_unique, fid, kid, kid_against, retrieval
from data.probes import probe_for
from data.shapes import canonical_caption, sample_attributes


def features(n: int, seed: int, dim: int = 16, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * scale + shift


def test_kid_and_fid_are_near_zero_for_one_distribution_and_large_against_noise():
    real, same, other = features(300, 0), features(300, 1), features(300, 2, shift=2.0, scale=2.0)
    kid_same, _ = kid(real, same)
    kid_other, std = kid(real, other)
    assert abs(kid_same) < 0.05 * kid_other and kid_other > 10 * std
    assert fid(real, real) == pytest.approx(0.0, abs=1e-6)
    assert fid(real, same) < 0.1 * fid(real, other)
    both = kid_against(real, other)
    assert abs(both["kid_real_split"]) < 0.05 * both["kid"]
    with pytest.raises(ValueError, match="at least 2"):
        kid(real[:1], other)


def test_kid_is_reproducible_for_a_seed():
    real, fake = features(120, 0), features(120, 3, shift=0.5)
    assert kid(real, fake, seed=4) == kid(real, fake, seed=4)


def captions_and_tables(n: int = 60, distinct: int = 20, noise: float = 0.05):
    g = torch.Generator().manual_seed(0)
    table = F.normalize(torch.randn(distinct, 32, generator=g), dim=-1)
    rows = torch.arange(n) % distinct
    images = F.normalize(table[rows] + noise * torch.randn(n, 32, generator=g), dim=-1)
    return [f"caption {int(r)}" for r in rows], table, rows, images


def test_caption_retrieval_of_matching_images_is_perfect_and_of_shuffled_captions_at_chance():
    captions, table, rows, images = captions_and_tables(n=2000, distinct=50)
    assert caption_retrieval(images, table, rows)["caption_top1"] == 1.0
    shuffled = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(1))]
    found = caption_retrieval(images, table, shuffled)
    for k in (1, 5):
        assert found[f"caption_top{k}_low"] <= found[f"caption_top{k}_chance"] + 0.01
        assert found[f"caption_top{k}"] == pytest.approx(k / 50, abs=0.03)
        assert found[f"caption_top{k}_low"] <= found[f"caption_top{k}"] <= found[f"caption_top{k}_high"]


def test_embed_unique_keeps_one_row_per_distinct_caption():
    captions, table, rows, _ = captions_and_tables()
    lookup = {f"caption {i}": table[i] for i in range(len(table))}
    calls = []

    def embed_text(texts):
        calls.append(len(texts))
        return torch.stack([lookup[t] for t in texts]) * 3  # unnormalised on purpose

    unique_table, index = embed_unique(captions, embed_text)
    assert sum(calls) == 20 and unique_table.shape == (20, 32)
    assert torch.allclose(unique_table[index], table[rows], atol=1e-6)


def test_retrieval_both_ways_counts_shared_captions_as_hits():
    captions, table, rows, images = captions_and_tables()
    found = retrieval(images, table[rows], captions)
    assert found["i2t_top1"] == found["t2i_top1"] == found["retrieval_top1"] == 1.0
    wrong = retrieval(images, table[(rows + 1) % 20], captions)
    assert wrong["i2t_top1"] == 0.0 and wrong["t2i_top1"] == 0.0


def test_clip_score_is_a_hundred_times_the_clipped_cosine():
    a = F.normalize(torch.randn(4, 8), dim=-1)
    assert clip_score(a, a)["clip_score"] == pytest.approx(100.0)
    assert clip_score(a, -a)["clip_score"] == 0.0
    score = clip_score(a, a * 2)
    assert score["clip_score_low"] <= score["clip_score"] <= score["clip_score_high"]


def test_probes_run_only_for_their_datasets_captions():
    shapes = [canonical_caption(sample_attributes(0, i)) for i in range(5)]
    assert probe_for(shapes).name == "shapes"
    assert probe_for(["a photo of a dog", *shapes]) is None
    assert probe_for([]) is None


def test_kid_of_unit_embeddings_is_not_squashed_to_zero():
    real = F.normalize(features(200, 0, dim=128), dim=-1)
    shifted = F.normalize(features(200, 1, dim=128, shift=0.3), dim=-1)
    assert kid(real, shifted)[0] > 0.05, "directions are compared, whatever their length"
    assert kid(real * 5, shifted)[0] == pytest.approx(kid(real, shifted)[0])
