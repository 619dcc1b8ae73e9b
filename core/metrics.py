"""Metrics every image–caption dataset has, each with its interval, over features of bounded size.

Everything here works on embeddings a frozen network already made (the run's CLIP by default):
- retrieval: image→text and text→image top-k among held-out pairs (identical captions count as hits);
- caption retrieval: the rank of each image's own caption among all distinct held-out captions;
- CLIP score: 100 · max(cos(image, caption), 0), as torchmetrics' CLIPScore defines it;
- KID and FID between two sets of features (torchmetrics, with the features handed in as they are).
Shares come with 95% Wilson intervals, means with normal ones.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EmbedText = Callable[[list[str]], Tensor]


def share_interval(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a share measured on n cases: how far an accuracy
    from a few hundred images can be trusted (0.83 on 100 images: 0.74-0.89)."""
    if n < 1:
        raise ValueError(f"a share needs at least one case, got n={n}")
    if not 0 <= share <= 1:
        raise ValueError(f"a share is between 0 and 1, got {share}")
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def format_share(share: float, n: int) -> str:
    """'0.83 (0.74-0.89)': a share with its 95% interval."""
    low, high = share_interval(share, n)
    return f"{share:.2f} ({low:.2f}-{high:.2f})"


def mean_interval(values: Tensor, z: float = 1.96) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-example values with its normal 95% interval."""
    values = values.double().flatten()
    mean = float(values.mean())
    half = z * float(values.std()) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, mean - half, mean + half


def with_intervals(name: str, share: float, n: int) -> dict[str, float]:
    """`name` and its Wilson interval as `name_low` / `name_high`."""
    low, high = share_interval(share, n)
    return {name: share, f"{name}_low": low, f"{name}_high": high}


def unique_captions(captions: Sequence[str]) -> tuple[list[str], Tensor]:
    """The distinct captions (in first-seen order) and, per caption, its row among them."""
    rows: dict[str, int] = {}
    index = [rows.setdefault(c, len(rows)) for c in captions]
    return list(rows), torch.tensor(index, dtype=torch.long)


def embed_unique(captions: Sequence[str], embed_text: EmbedText, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Unit-norm embeddings of the distinct captions [U, D] and each caption's row among them [N]."""
    unique, index = unique_captions(captions)
    table = torch.cat([embed_text(unique[i:i + batch_size]).float().cpu() for i in range(0, len(unique), batch_size)])
    return F.normalize(table, dim=-1), index


def _hits(scores: Tensor, truth: Tensor, k: int) -> Tensor:
    """Whether the true column of each row is among its k best (ties broken against it)."""
    true_score = scores.gather(1, truth[:, None])
    better = (scores > true_score).sum(1)
    return better < k


def caption_retrieval(image_embeds: Tensor, caption_embeds: Tensor, index: Tensor, ks: Sequence[int] = (1, 5),
                      prefix: str = "caption_") -> dict[str, float]:
    """Per image, is its own caption among the k distinct held-out captions closest to it? Top-k rates
    with their intervals, and the chance rate k / U."""
    scores = F.normalize(image_embeds.float().cpu(), dim=-1) @ caption_embeds.T
    n, u = scores.shape
    out: dict[str, float] = {}
    for k in ks:
        out.update(with_intervals(f"{prefix}top{k}", float(_hits(scores, index, k).float().mean()), n))
        out[f"{prefix}top{k}_chance"] = min(1.0, k / u)
    return out


def retrieval(image_embeds: Tensor, text_embeds: Tensor, captions: Sequence[str], ks: Sequence[int] = (1, 5)
              ) -> dict[str, float]:
    """CLIP's held-out retrieval in both directions. image→text ranks the distinct captions for each image;
    text→image ranks the images for each distinct caption, a hit being any image of that caption."""
    unique, index = unique_captions(captions)
    first = first_rows(index, len(unique))
    texts = F.normalize(text_embeds.float().cpu()[first], dim=-1)
    images = F.normalize(image_embeds.float().cpu(), dim=-1)
    out = caption_retrieval(images, texts, index, ks, prefix="i2t_")
    scores = texts @ images.T  # [U, N]
    same = index[None, :] == torch.arange(len(unique))[:, None]
    best_true = scores.masked_fill(~same, -math.inf).amax(1, keepdim=True)
    better = (scores > best_true).sum(1)
    for k in ks:
        out.update(with_intervals(f"t2i_top{k}", float((better < k).float().mean()), len(unique)))
    out["retrieval_top1"] = (out["i2t_top1"] + out["t2i_top1"]) / 2
    out["retrieval_top5"] = (out["i2t_top5"] + out["t2i_top5"]) / 2 if 5 in ks else out["retrieval_top1"]
    return out


def first_rows(index: Tensor, count: int) -> Tensor:
    """The first row of each distinct caption, from `unique_captions`' index."""
    first = torch.full((count,), -1, dtype=torch.long)
    for row, u in enumerate(index.tolist()):
        if first[u] < 0:
            first[u] = row
    return first


def clip_score(image_embeds: Tensor, text_embeds: Tensor, prefix: str = "clip_score") -> dict[str, float]:
    """Mean 100 · max(cos, 0) of paired image and caption embeddings, with its interval."""
    cos = F.cosine_similarity(image_embeds.float().cpu(), text_embeds.float().cpu(), dim=-1)
    mean, low, high = mean_interval(100 * cos.clamp_min(0))
    return {prefix: mean, f"{prefix}_low": low, f"{prefix}_high": high}


class _Given(nn.Module):
    """The 'feature extractor' torchmetrics calls on features that are already computed."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, features: Tensor) -> Tensor:
        return features


def kid(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int | None = None, seed: int = 0
        ) -> tuple[float, float]:
    """Kernel inception distance (unbiased, polynomial kernel) between two feature sets [N, D], as
    (mean, std) over random subsets; with features of the run's CLIP rather than Inception's, taken as
    directions (normalised, scaled by √D)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(len(real), len(fake))
    if n < 2:
        raise ValueError(f"KID needs at least 2 examples on each side, got {len(real)} and {len(fake)}")
    with warnings.catch_warnings():  # it warns that it keeps the features: these are a held-out set's
        warnings.simplefilter("ignore")
        metric = KernelInceptionDistance(feature=_Given(real.shape[1]), subsets=subsets,
                                         subset_size=subset_size or max(2, n // 2), normalize=True)
    metric.update(_kernel_scale(real), real=True)
    metric.update(_kernel_scale(fake), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _kernel_scale(features: Tensor) -> Tensor:
    """Unit vectors scaled by √D: the polynomial kernel (x·y / D + 1)³ then sees dot products of order
    one, as with Inception's features; on unit CLIP embeddings it would see ~1/D and every KID ~0."""
    return F.normalize(features.double().cpu(), dim=-1) * math.sqrt(features.shape[1])


def fid(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between two feature sets [N, D] (biased for N of a few hundred: prefer KID)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Given(real.shape[1]), normalize=True)
    metric.update(real.double().cpu(), real=True)
    metric.update(fake.double().cpu(), real=False)
    return float(metric.compute())


def kid_against(real: Tensor, fake: Tensor, prefix: str = "kid", seed: int = 0) -> dict[str, float]:
    """KID of `fake` against `real`, beside the same between two halves of `real` (what sampling noise
    alone gives at that size)."""
    mean, std = kid(real, fake, seed=seed)
    out = {prefix: mean, f"{prefix}_std": std}
    half = len(real) // 2
    if half >= 2:
        order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
        base, base_std = kid(real[order[:half]], real[order[half:2 * half]], seed=seed)
        out.update({f"{prefix}_real_split": base, f"{prefix}_real_split_std": base_std})
    return out
