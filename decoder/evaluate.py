"""How well the decoder turns held-out CLIP image embeddings back into the pictures they describe.

With `best_of` > 1 each embedding is decoded that many times and the candidate CLIP reads closest to
it is kept (`decoder.best_of`); the metrics below are of the kept images, and `_single` ones (the
plain decode, candidate 0) stand beside them.

- clip_consistency: mean cos(CLIP(decoded), conditioning embedding), beside the same for the real
  images (`_real`, as stored; `_real_lowres`, at the decoder's resolution: the ceiling it can reach);
- zeroshot_<attribute>: zero-shot accuracy of CLIP on the decoded images (shapes captions only),
  beside zeroshot_real_<attribute> for the real images;
- render_match_<attribute>: a CLIP-free check on shapes: the decoded image is closest (MSE) to the
  rendering of its caption among renderings with that one attribute changed (`_real`: real images);
- inversion_psnr: DDIM inversion then η = 0 DDIM decoding of real images, in dB;
- sample_grid: real images (top rows) above their decodings (bottom rows).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from clip.encoder import ClipEncoder
from clip.zeroshot import attribute_accuracy
from data.shapes import ATTRIBUTE_VALUES, ATTRIBUTES, ShapeAttributes, parse_caption, render
from data.transforms import to_pil, to_tensor
from decoder.best_of import decode_best_of
from decoder.config import DecoderEvalConfig
from decoder.model import Decoder
from decoder.sample import Caption, decode, invert


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, S, S] → float [-1, 1]."""
    return images.float() / 127.5 - 1


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2, i.e. the same as on [0, 1])."""
    mse = ((x.float() - y.float()) / 2).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def caption_of(val: dict[str, torch.Tensor], rows: slice) -> Caption:
    return Caption(val["text_embeds"][rows], val["text_tokens"][rows], val["text_mask"][rows])


def evaluate_decoder(decoder: Decoder, val: dict[str, torch.Tensor], real_images: torch.Tensor,
                     captions: Sequence[str], encoder: ClipEncoder, cfg: DecoderEvalConfig) -> dict:
    """Metrics (floats) and `sample_grid` (a PIL image) on the first `cfg.size` held-out examples.

    `val` holds the shards' tensors with images at the decoder's resolution; `real_images` the
    images as stored (uint8), for the real-image baselines."""
    n = min(cfg.size, val["image_embeds"].shape[0])
    rows = slice(0, n)
    target = val["image_embeds"][rows].float()
    start = time.perf_counter()
    best = decode_best_of(decoder, encoder.encode_pixels, target, caption_of(val, rows),
                          list(range(cfg.seed, cfg.seed + n)), cfg.best_of, steps=cfg.steps, sampler=cfg.sampler,
                          guidance=cfg.guidance, threshold=cfg.threshold, batch_size=cfg.batch_size)
    decoded = best.images
    # per kept image, every candidate's decode and CLIP check included
    metrics: dict = {"decode_seconds_per_image": (time.perf_counter() - start) / n}
    embeds = {"_real": encoder.encode_pixels(to_signed(real_images[rows])).cpu()}
    if best.embeds is None:
        embeds[""] = encoder.encode_pixels(decoded).cpu()
    else:  # CLIP already read every candidate; the plain decode (candidate 0) stands beside the kept one
        embeds[""] = best.embeds[torch.arange(n), best.index].cpu()
        embeds["_single"] = best.embeds[:, 0].cpu()
    if real_images.shape[-1] != decoder.cfg.image_size:
        embeds["_real_lowres"] = encoder.encode_pixels(to_signed(val["images"][rows])).cpu()
    for suffix, emb in embeds.items():
        metrics[f"clip_consistency{suffix}"] = float(F.cosine_similarity(emb, target.cpu(), dim=-1).mean())
    metrics.update(zeroshot_metrics(embeds, captions[:n], encoder))
    checked = {"": decoded.cpu(), "_real": to_signed(val["images"][rows])}
    if cfg.best_of > 1:
        checked["_single"] = best.candidates[:, 0].cpu()
    for suffix, images in checked.items():
        metrics.update({f"render_match{suffix}_{k}": v for k, v in render_match(images, captions[:n]).items()})
    metrics.update(inversion_metrics(decoder, val, min(cfg.invert_size, n), cfg.invert_steps))
    if cfg.grid:
        metrics["sample_grid"] = sample_grid(to_signed(val["images"][: cfg.grid]), decoded[: cfg.grid])
    return metrics


def zeroshot_metrics(embeds: dict[str, torch.Tensor], captions: Sequence[str], encoder: ClipEncoder) -> dict[str, float]:
    """Per-attribute zero-shot accuracy for the captions that parse as shapes captions (none: no metrics)."""
    parsed = [parse_caption(c) for c in captions]
    keep = [i for i, a in enumerate(parsed) if a is not None]
    if not keep:
        return {}
    attrs = [parsed[i] for i in keep]

    def embed_text(texts: list[str]) -> torch.Tensor:
        return encoder.encode_text(texts).embeds

    out = {}
    for suffix, emb in embeds.items():
        accuracy = attribute_accuracy(emb[keep], attrs, embed_text)
        out.update({f"zeroshot{suffix}_{k}": v for k, v in accuracy.items()})
        out[f"zeroshot{suffix}_min"] = min(accuracy.values())
    return out


def render_match(images: torch.Tensor, captions: Sequence[str]) -> dict[str, float]:
    """Per attribute, the share of images (in [-1, 1]) nearer to their caption's rendering than to every
    rendering with that attribute changed (no jitter); captions that do not parse are left out."""
    size, cache = images.shape[-1], {}

    def rendering(attrs: ShapeAttributes) -> torch.Tensor:
        if attrs not in cache:
            cache[attrs] = to_tensor(render(attrs, size), size)
        return cache[attrs]

    hits, count = dict.fromkeys(ATTRIBUTES, 0), 0
    for image, caption in zip(images, captions):
        attrs = parse_caption(caption)
        if attrs is None:
            continue
        count += 1
        for name in ATTRIBUTES:
            clash = {"color": attrs.background, "background": attrs.color}.get(name)
            values = [v for v in ATTRIBUTE_VALUES[name] if v != clash]
            errors = [float((rendering(attrs.replace(**{name: v})) - image).pow(2).mean()) for v in values]
            hits[name] += values[errors.index(min(errors))] == getattr(attrs, name)
    if not count:
        return {}
    out = {k: v / count for k, v in hits.items()}
    out["min"] = min(out.values())
    return out


def inversion_metrics(decoder: Decoder, val: dict[str, torch.Tensor], n: int, steps: int) -> dict[str, float]:
    """DDIM-invert n real images with their embeddings and captions, decode back with η = 0."""
    rows = slice(0, n)
    images = to_signed(val["images"][rows])
    embeds, text = val["image_embeds"][rows], caption_of(val, rows)
    x_T = invert(decoder, images, embeds, text, steps=steps)
    rebuilt = decode(decoder, embeds, text, list(range(n)), steps=steps, sampler="ddim", guidance=1.0, eta=0.0, x_T=x_T)
    scores = psnr(rebuilt.cpu(), images)
    return {"inversion_psnr": float(scores.mean()), "inversion_psnr_min": float(scores.min()),
            "inversion_xT_std": float(x_T.std())}


def sample_grid(real: torch.Tensor, decoded: torch.Tensor, columns: int = 8, min_side: int = 64) -> Image.Image:
    """Rows of real images, each followed by the row of their decodings; small images are enlarged (nearest)."""
    side = real.shape[-1]
    scale = max(1, math.ceil(min_side / side))
    tiles = []
    for start in range(0, real.shape[0], columns):
        tiles.extend([real[start:start + columns], decoded[start:start + columns].cpu()])
    rows = [F.pad(t, (0, 0, 0, 0, 0, 0, 0, columns - t.shape[0]), value=-1) for t in tiles]
    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)
    if scale > 1:
        grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    return to_pil(grid)
