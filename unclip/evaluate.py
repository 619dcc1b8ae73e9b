"""Do generated images show their prompts? Generic figures on any dataset, beside the real images'.

- clip_score: 100 · cos(CLIP(image), CLIP(prompt)); `_real` for the real images of the same captions;
- caption_top1 / caption_top5: how often an image's own caption is among the 1 / 5 captions of the
  pool (all held-out captions) closest to it, beside the real images' rate;
- kid: KID of the generated against the real images in the CLIP's feature space, beside the KID
  between two halves of the real ones;
- where the prompts come from a dataset with a probe (shapes), its zero-shot attribute accuracy.
The run's CLIP judges by default; any other CLIP encoder can be handed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from clip.encoder import ClipEncoder, load_encoder
from clip.spec import ClipSpec
from core.errors import UnclipError
from core.metrics import caption_retrieval, clip_score, kid_against
from data.probes import prefixed, probe_for

Images = Sequence[str | Path | Image.Image]


def pictures(images: Images) -> list[Image.Image]:
    return [im if isinstance(im, Image.Image) else Image.open(im).convert("RGB") for im in images]


def champion_encoder() -> ClipEncoder:
    from core.registry import download_model

    return load_encoder(ClipSpec.load(download_model("unclip-clip"), own_files=True))


def image_metrics(images: Images, prompts: Sequence[str], encoder: ClipEncoder, pool: Sequence[str] | None = None,
                  real: Images | None = None) -> dict[str, float]:
    """The figures above for `images` made from `prompts`; `pool` is the caption set retrieval ranks
    (default: the distinct prompts), `real` the real images of the same captions, in the same order."""
    if len(images) != len(prompts):
        raise UnclipError(f"{len(images)} images for {len(prompts)} prompts")
    pool = list(dict.fromkeys(pool if pool is not None else prompts))
    missing = sorted(set(prompts) - set(pool))
    if missing:
        raise UnclipError(f"prompt {missing[0]!r} is not in the caption pool")
    table = encoder.encode_text(pool).embeds.cpu()
    row = {c: i for i, c in enumerate(pool)}
    index = torch.tensor([row[p] for p in prompts])
    sets = {"": encoder.encode_image(pictures(images)).cpu()}
    if real is not None:
        sets["_real"] = encoder.encode_image(pictures(real)).cpu()
    out: dict[str, float] = {}
    for suffix, embeds in sets.items():
        out.update({k.replace("clip_score", f"clip_score{suffix}"): v
                    for k, v in clip_score(embeds, table[index]).items()})
        out.update({k.replace("caption_", f"caption{suffix}_"): v
                    for k, v in caption_retrieval(embeds, table, index).items()})
    if real is not None and min(len(images), len(real)) >= 4:
        out.update(kid_against(sets["_real"], sets[""]))
    probe = probe_for(prompts)
    if probe is not None:
        def embed_text(texts: list[str]) -> torch.Tensor:
            return encoder.encode_text(texts).embeds
        for suffix, embeds in sets.items():
            out.update(prefixed(f"zeroshot{suffix}_", probe.zeroshot(embeds, prompts, embed_text)))
    return out


def prompt_accuracy(images: Images, prompts: Sequence[str], encoder: ClipEncoder | None = None) -> dict[str, float]:
    """The probe's per-attribute zero-shot accuracy (and `min`) of `images` against their prompts, for
    datasets with a probe (shapes). Without an encoder, the registry's champion CLIP judges."""
    if len(images) != len(prompts):
        raise UnclipError(f"{len(images)} images for {len(prompts)} prompts")
    probe = probe_for(prompts)
    if probe is None:
        raise UnclipError("these prompts come from no dataset with attribute readings (shapes); "
                          "use unclip.evaluate.image_metrics")
    encoder = encoder or champion_encoder()
    embeds = encoder.encode_image(pictures(images))
    return probe.zeroshot(embeds, prompts, lambda captions: encoder.encode_text(captions).embeds)
