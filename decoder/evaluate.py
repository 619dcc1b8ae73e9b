"""How well the decoder turns held-out CLIP image embeddings back into the pictures they describe.

With `decoder_best_of` > 1 each embedding is decoded that many times and the candidate CLIP reads closest to
it is kept (`decoder.best_of`); the metrics below are of the kept images, and `_single` ones (the
plain decode, candidate 0) stand beside them. On any dataset:

- clip_consistency: mean cos(CLIP(decoded), conditioning embedding), beside the same for the real
  images (`_real`, as stored; `_real_lowres`, at the decoder's resolution: the ceiling it can reach);
- clip_score: 100 · cos(CLIP(decoded), CLIP(caption)), beside the real images' (the gate);
- caption_top1 / caption_top5: how often a decoded image's own caption is among the 1 / 5 held-out
  captions closest to it, beside the real images' rate;
- kid: KID between the decoded and the real images in the CLIP's feature space, beside the KID
  between two halves of the real images;
- inversion_psnr: DDIM inversion then η = 0 DDIM decoding of real images, in dB;
- sample_grid: real images (top rows) above their decodings (bottom rows).

Where the captions' dataset has a probe (shapes), its figures too: `zeroshot<suffix>_<attribute>`
(CLIP's attribute reading) and `render_match<suffix>_<attribute>` (a CLIP-free pixel check).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from clip.encoder import ClipEncoder
from core.metrics import caption_retrieval, clip_score, first_rows, kid_against, unique_captions
from data.probes import prefixed, probe_for
from data.transforms import to_pil
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
    captions = list(captions[:n])
    target = val["image_embeds"][rows].float()
    start = time.perf_counter()
    best = decode_best_of(decoder, encoder.encode_pixels, target, caption_of(val, rows),
                          list(range(cfg.seed, cfg.seed + n)), cfg.decoder_best_of, steps=cfg.steps, sampler=cfg.sampler,
                          guidance=cfg.guidance, threshold=cfg.threshold, batch_size=cfg.batch_size,
                          precision=cfg.precision)
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
    metrics.update(image_text_metrics(embeds, target.cpu(), val["text_embeds"][rows], captions))
    real = embeds.get("_real_lowres", embeds["_real"])
    metrics.update(kid_against(real, embeds[""], seed=cfg.seed))
    images = {"": decoded.cpu(), "_real": to_signed(val["images"][rows])}
    if cfg.decoder_best_of > 1:
        images["_single"] = best.candidates[:, 0].cpu()
    metrics.update(probe_metrics(embeds, images, captions, encoder))
    metrics.update(inversion_metrics(decoder, val, min(cfg.invert_size, n), cfg.invert_steps))
    if cfg.grid:
        metrics["sample_grid"] = sample_grid(to_signed(val["images"][: cfg.grid]), decoded[: cfg.grid])
    return metrics


def image_text_metrics(embeds: dict[str, torch.Tensor], target: torch.Tensor, text_embeds: torch.Tensor,
                       captions: Sequence[str]) -> dict[str, float]:
    """CLIP consistency, CLIP score and caption retrieval of each named set of image embeddings."""
    unique, index = unique_captions(captions)
    table = F.normalize(text_embeds[first_rows(index, len(unique))].float().cpu(), dim=-1)
    out: dict[str, float] = {}
    for suffix, emb in embeds.items():
        out[f"clip_consistency{suffix}"] = float(F.cosine_similarity(emb, target, dim=-1).mean())
        score = clip_score(emb, text_embeds)
        out.update({k.replace("clip_score", f"clip_score{suffix}"): v for k, v in score.items()})
        found = caption_retrieval(emb, table, index, prefix="caption_")
        out.update({k.replace("caption_", f"caption{suffix}_"): v for k, v in found.items()})
    return out


def probe_metrics(embeds: dict[str, torch.Tensor], images: dict[str, torch.Tensor], captions: Sequence[str],
                  encoder: ClipEncoder) -> dict[str, float]:
    """The probe's zero-shot and pixel figures, where the captions' dataset has a probe."""
    probe = probe_for(captions)
    if probe is None:
        return {}

    def embed_text(texts: list[str]) -> torch.Tensor:
        return encoder.encode_text(texts).embeds

    out: dict[str, float] = {}
    for suffix, emb in embeds.items():
        out.update(prefixed(f"zeroshot{suffix}_", probe.zeroshot(emb, captions, embed_text)))
    for suffix, pictures in images.items():
        out.update(prefixed(f"render_match{suffix}_", probe.pixels(pictures, captions)))
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
