"""This project's model folders → a diffusers `UnCLIPPipeline` folder, where the cascade's layout allows it.

The networks are diffusers' own classes already (PriorTransformer, UNet2DConditionModel with
UnCLIPTextProjModel, UNet2DModel), so the export saves them as they are; what it checks first is that
diffusers' pipeline would run them the way this project does. Every part that differs is named in one
error (a decoder with patches or a draft, an open_clip CLIP, a level-conditioned upsampler, ...).
A CLIP with an image tower also gets `image_encoder/` and `feature_extractor/` beside the pipeline's
folders, as diffusers' image variations pipeline keeps them (UnCLIPPipeline ignores them).
"""

from __future__ import annotations

from pathlib import Path

from unclip import sources
from unclip.convert.clip_folder import towers_of
from unclip.convert.layout import LayoutError, scheduler_for
from unclip.loading import CascadeInfo, inspect_cascade, stage_configs


def convert_to_diffusers(models: str | Path, out: str | Path) -> Path:
    """Write the UnCLIPPipeline of the cascade in `models` (clip/ prior/ decoder/ upsampler1/) to `out`."""
    from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

    from decoder.io import load_decoder
    from prior.io import load_prior
    from upsamplers.io import load_upsampler

    found = sources.from_models_dir(Path(models).expanduser())
    info = inspect_cascade(found)
    configs = stage_configs(found)
    problems = layout_problems(info, configs)
    if problems:
        raise LayoutError("cannot export to diffusers' UnCLIPPipeline: " + "; ".join(problems))
    prior = load_prior(found["prior"].folder, expected_spec=info.spec)
    decoder, _ = load_decoder(found["decoder"].folder, clip_spec=info.spec)
    upsampler = load_upsampler(found["upsampler1"].folder)
    text_encoder, tokenizer, vision, processor = towers_of(found["clip"].folder)
    pipe = UnCLIPPipeline(
        prior=prior.prior, decoder=decoder.unet, text_encoder=text_encoder, tokenizer=tokenizer,
        text_proj=decoder.text_proj, super_res_first=upsampler.unet,
        super_res_last=upsampler.final_unet if upsampler.final_unet is not None else upsampler.unet,
        prior_scheduler=scheduler_for(prior.config.noise, False, "prior"),
        decoder_scheduler=scheduler_for(decoder.cfg.noise, decoder.cfg.learned_variance, "decoder"),
        super_res_scheduler=scheduler_for(upsampler.cfg.noise, upsampler.cfg.model.learned_variance, "upsampler1"))
    out = Path(out).expanduser()
    pipe.save_pretrained(out)
    if vision is not None:
        vision.save_pretrained(out / "image_encoder")
        processor.save_pretrained(out / "feature_extractor")
    return out


def layout_problems(info: CascadeInfo, configs: dict) -> list[str]:
    """Each part of the cascade diffusers' UnCLIPPipeline would run differently, as 'part: what'."""
    spec, prior, decoder = info.spec, configs["prior"], configs["decoder"]
    found = [
        ("clip", spec.backend != "hf", f"an {spec.backend} CLIP; the pipeline takes a transformers "
                                       "CLIPTextModelWithProjection"),
        ("clip", spec.normalise, "its stages take L2-normalised embeddings; the pipeline hands them CLIP's raw ones "
                                 "(a CLIP spec with normalise false)"),
        ("prior", prior.null_caption != "empty_caption", "a learned null caption; the pipeline guides against CLIP's "
                                                         "encoding of the empty caption"),
        ("prior", prior.text_width != prior.embed_dim, "caption tokens of another width than the embedding, which "
                                                       "diffusers' PriorTransformer cannot project"),
        ("decoder", decoder.patch_size != 1, f"patch_size {decoder.patch_size}"),
        ("decoder", decoder.coord_channels, "coordinate channels"),
        ("decoder", bool(decoder.draft_width), "a draft"),
        ("decoder", bool(decoder.refine_width), "a refiner"),
        ("decoder", not decoder.learned_variance, "fixed variance (3 output channels); the pipeline splits off a "
                                                  "learned variance"),
        ("decoder", decoder.null_text != "empty_caption", "drops captions to zeros; the pipeline's unconditional "
                                                          "branch has CLIP's encoding of the empty caption"),
        ("decoder", decoder.scale_embeds, "scales the embeddings by sqrt(dim); the pipeline's text_proj takes "
                                          "them as they are"),
        ("decoder", decoder.text_width != decoder.embed_dim, "caption tokens of another width than the embedding"),
    ]
    found += _upsampler_problems(configs)
    problems = [f"{part}: {what}" for part, bad, what in found if bad]
    noises = [("prior", prior.noise, False), ("decoder", decoder.noise, decoder.learned_variance)]
    if "upsampler1" in configs:
        up = configs["upsampler1"]
        noises.append(("upsampler1", up.noise, up.model.learned_variance))
    for part, noise, learned in noises:
        try:
            scheduler_for(noise, learned, part)
        except LayoutError as err:
            problems.append(str(err))
    return problems


def _upsampler_problems(configs: dict) -> list[tuple[str, bool, str]]:
    if "upsampler1" not in configs:
        return [("upsampler1", True, "none; the pipeline always runs a super-resolution stage")]
    up = configs["upsampler1"]
    m = up.model
    return [
        ("upsampler1", m.level_conditioning, "conditioned on its augmentation level; the pipeline calls "
                                             "super-resolution U-Nets without one"),
        ("upsampler1", m.residual, "predicts a correction to the bicubic input"),
        ("upsampler1", m.norm == "pixel", "pixel norm; diffusers' UNet2DModel has GroupNorm"),
        ("upsampler1", up.condition_resize != "bicubic_antialias", "conditions on clamped bicubic upsampling; the "
                                                                  "pipeline upsamples with antialiased bicubic"),
        ("upsampler1", up.aug_level > 0, f"noise augmentation at inference (aug_level {up.aug_level:g}); the "
                                         "pipeline adds none"),
        ("upsampler2", "upsampler2" in configs, "the pipeline has one super-resolution stage"),
    ]
