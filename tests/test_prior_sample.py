"""Sampling the prior: unit-norm outputs, best-of-n, seeded determinism independent of batch size."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from core.candidates import candidate_seeds, dot_scores, pick_best
from core.errors import ConfigError
from prior.evaluate import derangement, embedding_metrics, retrieval_ceiling
from prior.sample import sample_prior
from prior.testing import DIM, fake_text, tiny_prior


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def prior():
    return tiny_prior(seed=1)


def test_samples_are_unit_norm_clip_embeddings(prior):
    for sampler in ("ddim", "dpmpp"):
        z = sample_prior(prior, fake_text(3), [0, 1, 2], steps=6, sampler=sampler)
        assert z.shape == (3, DIM) and z.dtype == torch.float32
        assert torch.allclose(z.norm(dim=-1), torch.ones(3), atol=1e-5)
    guided = sample_prior(prior, fake_text(3), [0, 1, 2], steps=6, guidance=4.0)
    assert guided.shape == (3, DIM) and torch.isfinite(guided).all()


def test_same_seed_same_sample_in_any_batch(prior):
    text = fake_text(5)
    seeds = [11, 12, 13, 14, 15]
    whole = sample_prior(prior, text, seeds, steps=6, best_of=2, guidance=2.0)
    chunked = sample_prior(prior, text, seeds, steps=6, best_of=2, guidance=2.0, batch_size=2)
    one = sample_prior(prior, SimpleNamespace(embeds=text.embeds[3:4], tokens=text.tokens[3:4], mask=text.mask[3:4]),
                       [14], steps=6, best_of=2, guidance=2.0)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert torch.allclose(whole[3:4], one, atol=1e-5)
    again = sample_prior(prior, text, seeds, steps=6, best_of=2, guidance=2.0)
    assert torch.equal(whole, again)
    other = sample_prior(prior, text, [s + 100 for s in seeds], steps=6, best_of=2, guidance=2.0)
    assert not torch.allclose(whole, other, atol=1e-3)


def test_pick_best_keeps_the_largest_dot_product():
    g = torch.Generator().manual_seed(0)
    candidates = F.normalize(torch.randn(6, 4, DIM, generator=g), dim=-1)
    text = F.normalize(torch.randn(6, DIM, generator=g), dim=-1)
    chosen, index = pick_best(candidates, dot_scores(candidates, text))
    for b in range(6):
        dots = [float(candidates[b, k] @ text[b]) for k in range(4)]
        assert int(index[b]) == max(range(4), key=dots.__getitem__)
        assert torch.equal(chosen[b], candidates[b, index[b]])


def test_best_of_n_is_the_best_of_the_single_draws(prior):
    text = fake_text(4, seed=2)
    seeds = [5, 6, 7, 8]
    best = sample_prior(prior, text, seeds, steps=5, best_of=3)
    per_seed = [candidate_seeds([s], 3) for s in seeds]
    singles = torch.stack([sample_prior(prior, text, [c[k] for c in per_seed], steps=5, best_of=1)
                           for k in range(3)], dim=1)
    # the candidates are different draws (not one draw three times), and the kept one is the closest
    assert all((singles[:, 0] - singles[:, k]).abs().max() > 1e-3 for k in (1, 2))
    expected, _ = pick_best(singles, dot_scores(singles, text.embeds))
    assert torch.allclose(best, expected, atol=1e-5)
    assert candidate_seeds([5], 3)[0] == 5 and len(set(candidate_seeds([5, 6], 3))) == 6


def test_bad_inputs_are_clear_errors(prior):
    text = fake_text(2)
    with pytest.raises(ConfigError, match="one seed per caption"):
        sample_prior(prior, text, [1], steps=4)
    with pytest.raises(ConfigError, match="sampler"):
        sample_prior(prior, text, [1, 2], steps=4, sampler="euler")
    with pytest.raises(ConfigError, match="between 1 and 1000"):
        sample_prior(prior, text, [1, 2], steps=0)
    with pytest.raises(ConfigError, match="best_of"):
        sample_prior(prior, text, [1, 2], steps=4, best_of=0)
    wrong = SimpleNamespace(embeds=torch.randn(2, 64), tokens=text.tokens, mask=text.mask)
    with pytest.raises(ConfigError, match="a different CLIP"):
        sample_prior(prior, wrong, [1, 2], steps=4)


def test_embedding_metrics_on_known_cases():
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(50, DIM, generator=g), dim=-1)
    text = F.normalize(image + 2.0 * torch.randn(50, DIM, generator=g), dim=-1)
    perfect = embedding_metrics(image, image, text)
    assert perfect["cos_pred_image"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["retrieval_top1"] == 1.0
    assert abs(perfect["cos_pred_shuffled"]) < 0.2
    assert perfect["cos_pred_text"] == pytest.approx(perfect["cos_image_text"], abs=1e-6)
    assert perfect["baseline_cos_image"] == pytest.approx(perfect["cos_image_text"], abs=1e-6)
    assert perfect["baseline_retrieval_top1"] < 1.0
    d = derangement(50)
    assert sorted(d.tolist()) == list(range(50)) and not (d == torch.arange(50)).any()


def test_retrieval_ceiling_counts_shared_captions():
    assert retrieval_ceiling(["a", "b", "c"]) == 1.0
    assert retrieval_ceiling(["a", "a", "b", "c"]) == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)
