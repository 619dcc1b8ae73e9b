"""A diffusers `UnCLIPPipeline` folder (Karlo's layout) → this project's model folders.

    MODELS/clip        the transformers CLIP, self-contained (clip_folder.py)
    MODELS/prior       DiffusionPrior: diffusers' PriorTransformer under `prior.`, null caption = CLIP("")
    MODELS/decoder     Decoder: the UNet2DConditionModel and UnCLIPTextProjModel, learned variance
    MODELS/upsampler1  Upsampler: super_res_first as the U-Net, super_res_last for the last step

Each of our networks is built from a config derived from diffusers', then the two configs are compared
key by key, so anything this project cannot build is named instead of loading wrongly. Every stage
keeps the pipeline's sampling defaults (the unclip sampler, 25 / 25 / 7 steps, guidance 4 / 8, one
candidate) and reproduces diffusers' numbers: the unconditional branches see CLIP's encoding of "".
"""

from __future__ import annotations

from pathlib import Path

import torch

from clip.encoder import TextEncoding
from clip.spec import ClipSpec
from core.checkpoint import load_into
from core.diffusion import SamplingDefaults
from core.errors import CheckpointError
from unclip.convert.clip_folder import (
    image_encoder_folder,
    load_image_encoder,
    load_text_encoder,
    save_clip_folder,
)
from unclip.convert.layout import (
    LayoutError,
    check_pipeline_folder,
    check_same_config,
    noise_from_scheduler,
    part,
    pipeline_defaults,
)


def convert_from_diffusers(folder: str | Path, out: str | Path, image_encoder: str | Path | None = None) -> dict[str, Path]:
    """Write MODELS/{clip,prior,decoder,upsampler1} from an UnCLIPPipeline folder; returns the stage folders."""
    folder, out = Path(folder).expanduser(), Path(out).expanduser()
    check_pipeline_folder(folder)
    vision_folder = image_encoder_folder(Path(image_encoder).expanduser() if image_encoder else None, folder)
    text_encoder, tokenizer = load_text_encoder(folder)
    vision, processor = load_image_encoder(vision_folder) if vision_folder else (None, None)
    with part("clip"):
        spec = save_clip_folder(out / "clip", text_encoder, tokenizer, vision, processor)
    empty = empty_caption(text_encoder, tokenizer)
    del text_encoder, vision
    spec = ClipSpec.load(out / "clip", own_files=True)
    stage_spec = spec.reference()  # a prior's or decoder's spec only identifies the CLIP
    defaults = pipeline_defaults()
    folders = {"clip": out / "clip"}
    with part("prior"):
        folders["prior"] = save_prior_from(folder, out / "prior", spec, stage_spec, empty, defaults["prior"])
    with part("decoder"):
        folders["decoder"], size = save_decoder_from(folder, out / "decoder", spec, stage_spec, empty,
                                                     defaults["decoder"])
    with part("super_res"):
        folders["upsampler1"] = save_upsampler_from(folder, out / "upsampler1", size, defaults["upsampler1"])
    return folders


@torch.inference_mode()
def empty_caption(text_encoder, tokenizer) -> TextEncoding:
    """CLIP's encoding of "" exactly as diffusers' pipeline computes it for its unconditional branches (one
    caption, no attention mask: the padding's states differ, but both pipelines mask them out)."""
    tokens = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    out = text_encoder(tokens.input_ids)
    return TextEncoding(out.text_embeds.float().clone(), out.last_hidden_state.float().clone(),
                        tokens.attention_mask.bool())


def _load(kind, folder: Path, part: str):
    try:
        return kind.from_pretrained(folder / part, torch_dtype=torch.float32).eval()
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{folder / part}: cannot load the {part}: {err}") from None


def _scheduler_config(folder: Path, part: str) -> dict:
    from diffusers import UnCLIPScheduler

    return dict(UnCLIPScheduler.from_pretrained(folder / part).config)


def save_prior_from(folder: Path, out: Path, spec: ClipSpec, stage_spec: ClipSpec, empty: TextEncoding,
                    defaults: dict) -> Path:
    from diffusers import PriorTransformer

    from prior.config import PriorConfig
    from prior.io import save_prior
    from prior.model import DiffusionPrior

    source = _load(PriorTransformer, folder, "prior")
    scheduler = _scheduler_config(folder, "prior_scheduler")
    if scheduler["variance_type"] != "fixed_small_log":
        raise LayoutError(f"prior_scheduler: variance_type {scheduler['variance_type']}; the prior has no learned variance")
    c = source.config
    config = PriorConfig(
        embed_dim=c.embedding_dim, context_length=c.num_embeddings, text_width=source.encoder_hidden_states_proj.in_features,
        heads=c.num_attention_heads, head_dim=c.attention_head_dim, layers=c.num_layers, dropout=c.dropout,
        norm_in=c.norm_in_type == "layer", noise=noise_from_scheduler(scheduler), cond_drop=0.2,  # Karlo's rate
        null_caption="empty_caption", sampling=SamplingDefaults(sampler="unclip", best_of=1, **defaults))
    _check_clip_sizes("prior", spec, config.embed_dim, config.text_width, config.context_length)
    if not bool((source.clip_std > 0).all()):
        raise LayoutError("prior: clip_std is not positive everywhere (diffusers initialises it to zero: an untrained "
                          "PriorTransformer?)")
    prior = DiffusionPrior(config, clip_spec=stage_spec)
    check_same_config("prior", prior.prior.config, c)
    load_into(prior.prior, source.state_dict(), "prior")
    prior.set_empty_caption(empty.embeds[0], empty.tokens[0], empty.mask[0])
    return save_prior(out, prior.eval(), stage_spec, {"converted_from": str(folder)})


def save_decoder_from(folder: Path, out: Path, spec: ClipSpec, stage_spec: ClipSpec, empty: TextEncoding,
                      defaults: dict) -> tuple[Path, int]:
    from diffusers import UNet2DConditionModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    from decoder.io import save_decoder
    from decoder.model import Decoder

    unet = _load(UNet2DConditionModel, folder, "decoder")
    text_proj = _load(UnCLIPTextProjModel, folder, "text_proj")
    scheduler = _scheduler_config(folder, "decoder_scheduler")
    config = decoder_config(unet.config, text_proj, scheduler, spec, defaults)
    decoder = Decoder(config)
    check_same_config("decoder", decoder.unet.config, unet.config)
    check_same_config("text_proj", decoder.text_proj.config, text_proj.config)
    load_into(decoder.unet, unet.state_dict(), "decoder")
    load_into(decoder.text_proj, text_proj.state_dict(), "text_proj")
    decoder.set_empty_caption(empty.embeds[0], empty.tokens[0], empty.mask[0])
    return save_decoder(out, decoder.eval(), stage_spec), config.image_size


def decoder_config(c, text_proj, scheduler: dict, spec: ClipSpec, defaults: dict):
    """The DecoderConfig that builds diffusers' decoder U-Net `c` (a config) and its text projection."""
    from decoder.config import DecoderConfig, UNetConfig

    if c.in_channels != 3 or c.out_channels not in (3, 6) or not isinstance(c.layers_per_block, int):
        raise LayoutError(f"decoder: {c.in_channels} input / {c.out_channels} output channels, layers_per_block "
                          f"{c.layers_per_block}; this project's decoder takes 3 in, 3 or 6 out, one layer count")
    learned = c.out_channels == 6
    if learned != (scheduler["variance_type"] == "learned_range"):
        raise LayoutError(f"decoder_scheduler: variance_type {scheduler['variance_type']} with a decoder of "
                          f"{c.out_channels} output channels")
    widths = list(c.block_out_channels)
    if any(w % widths[0] for w in widths):
        raise LayoutError(f"decoder: block widths {widths} are not multiples of the first")
    attends = ["CrossAttn" in kind for kind in c.down_block_types]
    plain = {kind for kind, a in zip(c.down_block_types, attends) if not a}
    unet = UNetConfig(channels=widths[0], channel_mult=tuple(w // widths[0] for w in widths),
                      layers_per_block=c.layers_per_block, head_dim=c.attention_head_dim,
                      attention_resolutions=tuple(c.sample_size // 2**i for i, a in enumerate(attends) if a),
                      context_dim=c.cross_attention_dim, norm_groups=c.norm_num_groups, dropout=c.dropout,
                      resample="conv" if plain == {"DownBlock2D"} else "resnet")
    p = text_proj.config
    width = text_proj.encoder_hidden_states_proj.in_features
    _check_clip_sizes("text_proj", spec, p.clip_embeddings_dim, width, spec.context_length)
    return DecoderConfig(image_size=c.sample_size, unet=unet, noise=noise_from_scheduler(scheduler),
                         embed_dim=p.clip_embeddings_dim, text_width=width, extra_tokens=p.clip_extra_context_tokens,
                         scale_embeds=False, learned_variance=learned, null_text="empty_caption",
                         context_length=spec.context_length,
                         sampling=SamplingDefaults(sampler="unclip", best_of=1, **defaults))


def save_upsampler_from(folder: Path, out: Path, low_res: int, defaults: dict) -> Path:
    from diffusers import UNet2DModel

    from upsamplers.config import UpsamplerConfig, UpsamplerModelConfig
    from upsamplers.io import save_upsampler
    from upsamplers.model import Upsampler

    first, last = _load(UNet2DModel, folder, "super_res_first"), _load(UNet2DModel, folder, "super_res_last")
    scheduler = _scheduler_config(folder, "super_res_scheduler")
    c = first.config
    kinds = set(c.down_block_types)
    if kinds not in ({"ResnetDownsampleBlock2D"}, {"DownBlock2D"}) or c.in_channels != 6:
        raise LayoutError(f"super_res_first: blocks {sorted(kinds)} with {c.in_channels} input channels; this project's "
                          "upsampler has one kind of block throughout and takes [noisy, upsampled low-res] (6)")
    learned = c.out_channels == 6
    if learned != (scheduler["variance_type"] == "learned_range"):
        raise LayoutError(f"super_res_scheduler: variance_type {scheduler['variance_type']} with super-resolution "
                          f"U-Nets of {c.out_channels} output channels")
    model = UpsamplerModelConfig(
        channels=tuple(c.block_out_channels), layers_per_block=c.layers_per_block, norm="group",
        norm_groups=c.norm_num_groups, dropout=c.dropout, level_conditioning=False, residual=False,
        resample="resnet" if kinds == {"ResnetDownsampleBlock2D"} else "conv",
        time_scale_shift=c.resnet_time_scale_shift == "scale_shift", learned_variance=learned, final_step_unet=True)
    config = UpsamplerConfig(stage=1, low_res=low_res, high_res=c.sample_size, model=model,
                             noise=noise_from_scheduler(scheduler), sampler="unclip", sample_steps=defaults["steps"],
                             aug_level=0.0, condition_resize="bicubic_antialias")
    upsampler = Upsampler(config)
    check_same_config("super_res_first", upsampler.unet.config, c)
    check_same_config("super_res_last", upsampler.final_unet.config, last.config)
    load_into(upsampler.unet, first.state_dict(), "super_res_first")
    load_into(upsampler.final_unet, last.state_dict(), "super_res_last")
    return save_upsampler(out, upsampler.eval())


def _check_clip_sizes(part: str, spec: ClipSpec, embed_dim: int, text_width: int, tokens: int) -> None:
    ours = (spec.embed_dim, spec.text_width, spec.context_length)
    if (embed_dim, text_width, tokens) != ours:
        raise LayoutError(f"{part}: takes embeddings of {embed_dim}, caption tokens {tokens} × {text_width}; the "
                          f"text encoder gives {ours[0]}, {ours[2]} × {ours[1]}")
