"""Manipulations of the bipartite latent (z_i, x_T): variations, interpolations and text diffs.

x_T is the DDIM inversion of an image by the decoder conditioned on its CLIP image embedding z_i
(and, for text diffs with caption blending, the caption it was given). Decoding (z, x_T) with DDIM η = 0 and the inversion's steps and guidance (default 1:
unguided, so the round trip holds) gives the image back; η > 0 adds variation. Every frame of one
call is upsampled with the same seed, so frames differ only where their latents do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from core.candidates import candidate_seeds
from unclip.errors import SettingsError
from unclip.images import ImageInput, images_to_tensor, load_image, tensor_to_images
from unclip.provenance import attach
from unclip.settings import DEFAULT_EDIT_BEST_OF, EDIT_BEST_OF_ETA, MANIPULATION_GUIDANCE
from unclip.slerp import slerp
from unclip.stages import CascadeStages, SamplingPlan, check_prompts, select_rows

NOISE_MODES = ("fixed", "slerp")
DIRECTIONS = ("text", "prior")
THETA_MAX = {"text": 1.0, "prior": 2.0}  # slerp weight; multiple of the prior's shift (> 1 overshoots)
CAPTION_MODES = ("blend", "none")
# the θ at which a blended caption has moved all the way to the new one: the paper's useful end of
# the text direction, the whole edit of the prior's
CAPTION_FULL = {"text": 0.5, "prior": 1.0}


def _plan(pipe: CascadeStages, steps, guidance, output_size) -> SamplingPlan:
    # DDIM for the inversion's round trip; the upsamplers keep their own samplers
    return pipe.plan(steps, guidance, {"prior": "ddim", "decoder": "ddim"}, output_size,
                     guidance_defaults=MANIPULATION_GUIDANCE)


def _embed_and_invert(pipe: CascadeStages, images: list[Image.Image], plan: SamplingPlan,
                      text=None) -> tuple[Tensor, Tensor]:
    with pipe.timed("clip"):
        z = pipe.encoder.encode_image(images)
    x0 = images_to_tensor(images, pipe.info.sizes["decoder"]).to(pipe.device)
    with pipe.timed("invert"):
        x_t = pipe.invert(x0, z, plan, text)
    return z, x_t


def _finish(pipe: CascadeStages, x: Tensor, seed: int, plan: SamplingPlan, records: list[dict]) -> list[Image.Image]:
    x = pipe.upsample(x, [seed] * len(x), plan)
    shared = pipe.record(plan)
    return [attach(image, {**rec, **shared}) for image, rec in zip(tensor_to_images(x), records)]


def _source_name(image: ImageInput) -> str:
    return str(image) if not isinstance(image, Image.Image) else "<PIL image>"


@torch.inference_mode()
def variations(pipe: CascadeStages, image: ImageInput, n: int = 4, eta: float = 0.5, *, seed: int = 0,
               steps: dict[str, Any] | None = None, guidance: dict[str, Any] | None = None,
               output_size: int | None = None) -> list[Image.Image]:
    """n decodings of the image's (z_i, x_T) with DDIM η; variation k draws its noise from seed + k."""
    if n < 1:
        raise SettingsError(f"the number of variations must be at least 1, got {n}")
    if not 0 <= eta <= 1:
        raise SettingsError(f"eta must lie in [0, 1] (0 reconstructs the image), got {eta}")
    picture = load_image(image)
    plan = _plan(pipe, steps, guidance, output_size)
    pipe.timings = {}
    z, x_t = _embed_and_invert(pipe, [picture], plan)
    seeds = [seed + k for k in range(n)]
    with pipe.timed("decoder"):
        x = pipe.decode(z.expand(n, -1), None, seeds, plan, x_t=x_t.expand(n, -1, -1, -1).clone(), eta=eta)
    out = []
    for k, img in enumerate(tensor_to_images(pipe.upsample(x, seeds, plan))):
        record = {"task": "variations", "source": _source_name(image), "seed": seeds[k], "eta": eta}
        out.append(attach(img, {**record, **pipe.record(plan)}))
    return out


@torch.inference_mode()
def interpolate(pipe: CascadeStages, image_a: ImageInput, image_b: ImageInput, steps: int = 5,
                noise: str = "slerp", *, seed: int = 0, sample_steps: dict[str, Any] | None = None,
                guidance: dict[str, Any] | None = None, output_size: int | None = None) -> list[Image.Image]:
    """`steps` frames from a (θ = 0) to b (θ = 1): z_θ = slerp(z_a, z_b, θ); x_T one fixed draw of
    `seed` (noise="fixed") or slerp of both inversions, so both ends reconstruct (noise="slerp")."""
    if steps < 2:
        raise SettingsError(f"an interpolation needs at least 2 frames, got {steps}")
    if noise not in NOISE_MODES:
        raise SettingsError(f"noise must be one of {', '.join(NOISE_MODES)}, got {noise!r}")
    pictures = [load_image(image_a), load_image(image_b)]
    plan = _plan(pipe, sample_steps, guidance, output_size)
    pipe.timings = {}
    thetas = torch.linspace(0, 1, steps, dtype=torch.float64)
    if noise == "slerp":
        z, x_t = _embed_and_invert(pipe, pictures, plan)
        flat = x_t.flatten(1)
        x_frames = torch.stack([slerp(flat[0], flat[1], float(t)) for t in thetas]).view(steps, *x_t.shape[1:])
    else:
        with pipe.timed("clip"):
            z = pipe.encoder.encode_image(pictures)
        x_frames = None
    z_frames = torch.stack([slerp(z[0], z[1], float(t)) for t in thetas])
    with pipe.timed("decoder"):
        x = pipe.decode(z_frames, None, [seed] * steps, plan, x_t=x_frames)
    records = [{"task": "interpolate", "source": f"{_source_name(image_a)} -> {_source_name(image_b)}",
                "seed": seed, "theta": round(float(t), 6), "noise": noise} for t in thetas]
    return _finish(pipe, x, seed, plan, records)


def check_caption(caption: str, plan: SamplingPlan) -> None:
    """Refuse an unknown caption mode, and blending with a guided decoder (the blend is unguided)."""
    if caption not in CAPTION_MODES:
        raise SettingsError(f"caption must be one of {', '.join(CAPTION_MODES)}, got {caption!r}")
    if caption == "blend" and plan.guidance["decoder"] != 1.0:
        raise SettingsError("caption blending decodes unguided (decoder guidance 1); use caption 'none' for "
                            f"decoder guidance {plan.guidance['decoder']:g}")


def _prior_shift(pipe: CascadeStages, text, plan: SamplingPlan, draws: int) -> Tensor:
    """mean prior(to) − mean prior(from) over `draws` shared seeds: the caption edit, in image-embedding space."""
    seeds = list(range(draws))
    both = select_rows(text, [0] * draws + [1] * draws)
    z = pipe.sample_prior(both, seeds + seeds, plan).view(2, draws, -1).mean(dim=1)
    return z[1] - z[0]


@torch.inference_mode()
def text_diff(pipe: CascadeStages, image: ImageInput, from_caption: str, to_caption: str,
              thetas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), *, direction: str = "text",
              caption: str = "blend", draws: int = 8, decoder_best_of: int = DEFAULT_EDIT_BEST_OF,
              best_of_eta: float = EDIT_BEST_OF_ETA, seed: int = 0, steps: dict[str, Any] | None = None,
              guidance: dict[str, Any] | None = None, output_size: int | None = None) -> list[Image.Image]:
    """Edit an image towards a caption, decoding every frame from the image's x_T.

    direction="text" (the paper): z_d = normalise(z_t(to) − z_t(from)), frame θ decodes
    slerp(z_i, z_d, θ), useful up to θ ≈ 0.5. direction="prior": the same edit carried into
    image-embedding space by the prior, Δ = mean over `draws` seeds of prior(to) − prior(from), and
    frame θ decodes normalise(z_i + θ·Δ), θ = 1 being the whole edit (up to 2 overshoots it).

    caption="none" decodes from the embeddings alone (the paper's text diffs). caption="blend" also
    gives the decoder the captions: the image is inverted under `from_caption`, and frame θ decodes
    with the prediction moved from the `from_caption` one to the `to_caption` one by
    w = min(1, θ / CAPTION_FULL[direction]), so θ = 0 still gives the image back.

    decoder_best_of > 1: every frame with θ > 0 also decodes decoder_best_of − 1 candidates from the same x_T with
    DDIM η = best_of_eta (each from its own seed stream), and the one whose CLIP embedding comes
    closest to z_θ is kept (`_best_frames`); θ = 0 stays the plain reconstruction."""
    if direction not in DIRECTIONS:
        raise SettingsError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")

    if draws < 1:
        raise SettingsError(f"draws must be at least 1, got {draws}")
    if decoder_best_of < 1:
        raise SettingsError(f"decoder_best_of must be at least 1, got {decoder_best_of}")
    if not 0 < best_of_eta <= 1:
        raise SettingsError(f"best_of_eta must lie in (0, 1] (0 would repeat the plain frame), got {best_of_eta}")
    (from_caption,) = check_prompts([from_caption], "from caption")
    (to_caption,) = check_prompts([to_caption], "to caption")
    thetas = [float(t) for t in thetas]
    top = THETA_MAX[direction]
    if not thetas or any(not 0 <= t <= top for t in thetas):
        raise SettingsError(f"thetas of the {direction} direction must be values in [0, {top:g}], got {thetas}")
    picture = load_image(image)
    plan = _plan(pipe, steps, guidance, output_size)
    check_caption(caption, plan)
    pipe.timings = {}
    with pipe.timed("clip"):
        text = pipe.encode_text([from_caption, to_caption])
    diff = text.embeds[1] - text.embeds[0]
    if float(diff.norm()) < 1e-6:
        raise SettingsError("the from and to captions have the same CLIP text embedding: there is no direction")
    from_text = select_rows(text, [0]) if caption == "blend" else None
    z_i, x_t = _embed_and_invert(pipe, [picture], plan, from_text)
    if direction == "text":
        z_d = F.normalize(diff, dim=-1)
        z_frames = torch.stack([slerp(z_i[0], z_d, t) for t in thetas])
    else:
        shift = _prior_shift(pipe, text, plan, draws).to(z_i)
        z_frames = F.normalize(torch.stack([z_i[0] + t * shift for t in thetas]), dim=-1)
    n = len(thetas)
    frames_text, blend = None, None
    if caption == "blend":
        weights = torch.tensor([min(1.0, t / CAPTION_FULL[direction]) for t in thetas])
        frames_text, blend = select_rows(text, [0] * n), (select_rows(text, [1] * n), weights)
    with pipe.timed("decoder"):
        x = pipe.decode(z_frames, frames_text, [seed] * n, plan, x_t=x_t.expand(n, -1, -1, -1).clone(), blend=blend)
        edited = [k for k, t in enumerate(thetas) if t > 0]
        kept = [0] * n
        if decoder_best_of > 1 and edited:
            x, kept = _best_frames(pipe, x, z_frames, x_t, edited, frames_text, blend, seed, plan, decoder_best_of,
                                   best_of_eta)
    records = [{"task": "text_diff", "source": _source_name(image), "from_caption": from_caption,
                "to_caption": to_caption, "direction": direction, "caption": caption, "seed": seed, "theta": t,
                "decoder_best_of": decoder_best_of,
                **({"best_of_eta": best_of_eta, "candidate": kept[k]} if decoder_best_of > 1 else {})}
               for k, t in enumerate(thetas)]
    return _finish(pipe, x, seed, plan, records)


def _best_frames(pipe: CascadeStages, x: Tensor, z_frames: Tensor, x_t: Tensor, edited: list[int], text, blend,
                 seed: int, plan: SamplingPlan, decoder_best_of: int, eta: float) -> tuple[Tensor, list[int]]:
    """The plain (η = 0) frames `x`, with each edited frame replaced by the best of it and decoder_best_of − 1
    η > 0 decodes of the same (z_θ, x_T): the one CLIP reads closest to z_θ (decoder.best_of.rank).
    Returns the frames and each frame's kept candidate (0 = the plain frame)."""
    from decoder.best_of import rank

    extra = decoder_best_of - 1
    rows = [k for k in edited for _ in range(extra)]
    seeds = candidate_seeds([seed], decoder_best_of)[1:] * len(edited)
    rows_text = select_rows(text, rows) if text is not None else None
    rows_blend = (select_rows(blend[0], rows), blend[1][rows]) if blend is not None else None
    more = pipe.decode(z_frames[rows], rows_text, seeds, plan, x_t=x_t.expand(len(rows), -1, -1, -1).clone(),
                       eta=eta, blend=rows_blend)
    candidates = torch.cat([x[edited].unsqueeze(1), more.view(len(edited), extra, *x.shape[1:])], dim=1)
    best = rank(pipe.cascade.encoder.encode_pixels, candidates, z_frames[edited])
    x, kept = x.clone(), [0] * len(x)
    x[edited] = best.images.to(x)
    for k, index in zip(edited, best.index.tolist()):
        kept[k] = index
    return x, kept
