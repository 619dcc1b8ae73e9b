"""Small-CLIP training end to end on tiny settings, and the zero-shot scorer."""

from __future__ import annotations

import sys

import pytest
import torch

from clip.encoder import load_encoder
from clip.train import settings_for, train_clip
from core.metrics import format_share, share_interval
from data.shapes import ATTRIBUTES, canonical_caption, sample_attributes
from data.shapes.probe import attribute_accuracy


def test_smoke_training_writes_a_loadable_clip(tmp_path):
    settings = settings_for("smoke", ["train.steps=4", "data.num_examples=120", "data.val_size=20", "eval_size=20"])
    spec, metrics = train_clip(settings, tmp_path)
    assert set(metrics) >= {"retrieval_top1", "i2t_top5", "t2i_top1", "zeroshot_min"} | {f"zeroshot_{a}" for a in ATTRIBUTES}
    assert (tmp_path / "model" / "model.safetensors").is_file()
    encoder = load_encoder(spec)
    text = encoder.encode_text(["a small red circle in the center on a blue background"])
    assert text.embeds.shape == (1, spec.embed_dim)


def test_resnet_image_tower_trains_saves_and_reloads(tmp_path):
    settings = settings_for("smoke", ["train.steps=2", "data.num_examples=80", "data.val_size=10", "eval_size=10",
                                      "model.resnet_layers=[1,1,1,1]", "model.vision_width=8", "model.vision_heads=4"])
    spec, _ = train_clip(settings, tmp_path)
    encoder = load_encoder(spec)
    assert type(encoder.backend.model.visual).__name__ == "ModifiedResNet"
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(encoder.encode_pixels(pixels).norm(dim=-1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (["model.resnet_layers=[1,1,1,1]", "model.image_size=48"], "multiple of 32"),
    (["model.resnet_layers=[1,1,1,1]", "model.vision_width=8", "model.vision_heads=3"], "not divisible"),
])
def test_resnet_tower_settings_are_checked(overrides, message):
    with pytest.raises(Exception, match=message):
        settings_for("smoke", overrides)


def test_zero_shot_scorer_counts_the_true_value():
    attrs = [sample_attributes(0, i) for i in range(6)]
    captions = sorted({c for x in attrs for a in ATTRIBUTES for c in _cands(x, a)})
    table = {c: torch.nn.functional.normalize(torch.randn(16), dim=0) for c in captions}

    def embed_text(batch):
        return torch.stack([table[c] for c in batch])

    perfect = torch.stack([table[canonical_caption(x)] for x in attrs])
    assert attribute_accuracy(perfect, attrs, embed_text) == dict.fromkeys(ATTRIBUTES, 1.0)
    worst = -perfect
    assert all(v < 1.0 for v in attribute_accuracy(worst, attrs, embed_text).values())


@pytest.mark.parametrize(("hits", "n", "low", "high"), [
    # Wilson score intervals as scipy.stats.binomtest(hits, n).proportion_ci(method="wilson") gives them
    (83, 100, 0.7445, 0.8911), (81, 263, 0.2553, 0.3662), (0, 10, 0.0, 0.2775), (96, 96, 0.9615, 1.0)])
def test_share_interval_is_the_wilson_interval(hits, n, low, high):
    got = share_interval(hits / n, n)
    assert got == pytest.approx((low, high), abs=1e-4)
    assert got[0] <= hits / n <= got[1]


def test_share_interval_narrows_with_more_cases_and_refuses_nonsense():
    widths = [high - low for low, high in (share_interval(0.8, n) for n in (10, 100, 1000))]
    assert widths[0] > widths[1] > widths[2]
    assert format_share(0.83, 100) == "0.83 (0.74-0.89)"
    with pytest.raises(ValueError, match="at least one"):
        share_interval(0.5, 0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        share_interval(1.5, 10)


def _cands(x, attribute):
    from data.shapes import candidate_captions

    return candidate_captions(x, attribute)


def test_hard_negative_batches_hold_near_but_not_identical_captions():
    import open_clip

    from clip.batches import bag_of_tokens, contrastive_batches

    attrs = [sample_attributes(0, i) for i in range(400)]
    captions = [canonical_caption(x) for x in attrs]
    ids = open_clip.get_tokenizer("ViT-B-32", context_length=16)(captions)
    rows = {"images": torch.arange(400), "text_ids": ids}
    prepare = contrastive_batches(batch_size=32, hard_fraction=0.5, group=4)
    first = [b[0] for b in prepare(rows, torch.Generator().manual_seed(0))]
    again = [b[0] for b in prepare(rows, torch.Generator().manual_seed(0))]
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "must be a pure function of the generator"
    assert all(len(b) == 32 for b in first)
    words = bag_of_tokens(ids)
    batch = first[0]
    anchors, groups = batch[:4], batch[16:].reshape(4, 4)
    for anchor, group in zip(anchors, groups):
        for other in group:
            assert captions[other] != captions[anchor]
            shared = float(words[anchor] @ words[other])
            assert shared >= words[anchor].sum() - 2, "neighbours differ in at most a couple of words"
    import clip.batches

    dense_first = [b[0] for b in prepare(rows, torch.Generator().manual_seed(0))]
    clip.batches.DENSE_LIMIT, limit = 0, clip.batches.DENSE_LIMIT  # the sparse form picks the same neighbours
    try:
        sparse_first = [b[0] for b in prepare(rows, torch.Generator().manual_seed(0))]
    finally:
        clip.batches.DENSE_LIMIT = limit
    assert all(torch.equal(a, b) for a, b in zip(dense_first, sparse_first))
    random_only = contrastive_batches(batch_size=32)
    assert sum(len(b[0]) for b in random_only(rows, torch.Generator())) == 384


def test_command_line_trains_without_importing_mlflow_unless_tracking(tmp_path, monkeypatch):
    from clip.train import main

    monkeypatch.setitem(sys.modules, "mlflow", None)  # any import of it fails
    monkeypatch.setitem(sys.modules, "core.tracking", None)
    assert main(["--preset", "smoke", "--out", str(tmp_path), "--set", "train.steps=1", "--set", "data.num_examples=60",
                 "--set", "data.val_size=10", "--set", "eval_size=10"]) == 0
    assert (tmp_path / "model" / "model.safetensors").is_file()
