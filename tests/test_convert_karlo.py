"""unclip.convert against a tiny random diffusers UnCLIPPipeline in Karlo's layout (tests/karlo_tiny.py):
the converted cascade makes diffusers' numbers stage by stage, exports and re-imports to the same
tensors, carries the pipeline's sampling defaults, and every layout it cannot take is one error line."""

from __future__ import annotations

import json

import pytest
import torch
from karlo_tiny import IMAGE_SIZE, save_tiny_image_encoder, save_tiny_karlo
from safetensors.torch import load_file

from core.diffusion import generators, initial_noise
from core.seeds import stream_seed
from unclip.convert.__main__ import main as convert
from unclip.stages import stage_seeds

PROMPT = "a small red circle in the top left on a white background"
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def karlo(tmp_path_factory):
    root = tmp_path_factory.mktemp("karlo")
    return save_tiny_karlo(root / "pipeline"), save_tiny_image_encoder(root / "image_encoder")


@pytest.fixture(scope="module")
def models(karlo, tmp_path_factory):
    pipeline, vision = karlo
    out = tmp_path_factory.mktemp("converted") / "models"
    assert convert(["from-diffusers", str(pipeline), "--out", str(out), "--image-encoder", str(vision)]) == 0
    return out


@pytest.fixture(scope="module")
def pipelines(karlo, models):
    import diffusers
    from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    from unclip import UnclipPipeline

    diffusers.UnCLIPTextProjModel = UnCLIPTextProjModel  # from_pretrained looks it up there
    theirs = UnCLIPPipeline.from_pretrained(karlo[0])
    theirs.set_progress_bar_config(disable=True)
    return UnclipPipeline.from_models_dir(models, progress=False), theirs


def test_the_models_folder_is_what_the_pipeline_reads(models):
    assert sorted(p.name for p in models.iterdir()) == ["clip", "decoder", "prior", "upsampler1"]
    spec = json.loads((models / "clip" / "clip_spec.json").read_text())
    assert spec["model"] == "." and spec["normalise"] is False and len(spec["weights_sha256"]) == 64
    assert (models / "clip" / "model.safetensors").is_file() and (models / "clip" / "tokenizer.json").is_file()


def test_the_clip_folder_copies_as_the_same_clip(models, tmp_path):
    from clip.pretrained import copy_clip, parse_clip_ref

    spec = parse_clip_ref(str(models / "clip")).spec
    copied = copy_clip(spec, tmp_path / "copy")
    assert copied.fingerprint() == spec.fingerprint() and copied.normalise is False


def test_the_stored_defaults_are_the_pipelines(pipelines):
    ours, _ = pipelines
    plan = ours.plan()
    assert plan.steps == {"prior": 25, "decoder": 25, "upsampler1": 7}
    assert plan.guidance == {"prior": 4.0, "decoder": 8.0}
    assert set(plan.sampler.values()) == {"unclip"}
    given = ours.plan(steps={"decoder": 10}, guidance={"decoder": 3}, sampler="ddim")
    assert given.steps["decoder"] == 10 and given.guidance["decoder"] == 3.0
    assert set(given.sampler.values()) == {"ddim"}


def run_diffusers(theirs, text, latents):
    """diffusers' pipeline from the same text encoding and starting latents, each stage drawing its step
    noise from the generators ours uses for that stage (swapped in as the stage starts); returns its prior
    embeddings, decoder images and final images, all in our [-1, 1] convention."""
    noise = {stage: generators([stream_seed(s, "sampler") for s in stage_seeds(SEEDS, stage)])
             for stage in ("prior", "decoder", "upsampler1")}
    shared, seen = list(noise["prior"]), {}

    def before_decoder(module, args, kwargs):
        seen["prior"] = kwargs["image_embeddings"].clone()
        shared[:] = noise["decoder"]

    def before_super_res(module, args):
        if "super_res" not in seen:
            seen["super_res"] = args
            shared[:] = noise["upsampler1"]

    step = theirs.decoder_scheduler.step

    def decoder_step(*args, **kwargs):
        out = step(*args, **kwargs)
        seen["decoder"] = out.prev_sample.clamp(-1, 1)
        return out

    hooks = [theirs.text_proj.register_forward_pre_hook(before_decoder, with_kwargs=True),
             theirs.super_res_first.register_forward_pre_hook(before_super_res)]
    theirs.decoder_scheduler.step = decoder_step
    try:
        images = theirs(None, num_images_per_prompt=len(SEEDS), text_model_output=(text.embeds, text.tokens),
                        text_attention_mask=text.mask, generator=shared, output_type="pt", **latents).images
    finally:
        del theirs.decoder_scheduler.step
        for hook in hooks:
            hook.remove()
    return seen["prior"], seen["decoder"], torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1


def test_every_stage_makes_diffusers_numbers(pipelines):
    """The same prompt, seeds and steps (Karlo's 25 / 25 / 7, guidance 4 / 8) through both pipelines;
    generate_tensors' own stage outputs are compared, the prior's and the decoder's caught on their way."""
    ours, theirs = pipelines
    plan, seen = ours.plan(), {}
    for stage, name in (("prior", "sample_prior"), ("decoder", "decode")):
        run = getattr(ours, name)
        setattr(ours, name, lambda *a, _run=run, _stage=stage, **k: seen.setdefault(_stage, _run(*a, **k)))
    try:
        with torch.inference_mode():
            final = ours.generate_tensors([PROMPT], len(SEEDS), SEEDS[0], plan)
            text = ours.encode_text([PROMPT])
            latents = {"prior_latents": initial_noise(stage_seeds(SEEDS, "prior"), (seen["prior"].shape[1],), "cpu"),
                       "decoder_latents": initial_noise(stage_seeds(SEEDS, "decoder"), (3, IMAGE_SIZE, IMAGE_SIZE),
                                                        "cpu"),
                       "super_res_latents": initial_noise(stage_seeds(SEEDS, "upsampler1"),
                                                          (3, 2 * IMAGE_SIZE, 2 * IMAGE_SIZE), "cpu")}
            their_z, their_small, their_final = run_diffusers(theirs, text, latents)
            ids = theirs.tokenizer([PROMPT], padding="max_length", max_length=77, truncation=True,
                                   return_tensors="pt")
            their_text = theirs.text_encoder(ids.input_ids)
    finally:
        del ours.sample_prior, ours.decode
    assert (text.embeds - their_text.text_embeds).abs().max() <= 1e-5
    assert (seen["prior"] - their_z).abs().max() <= 1e-4
    assert (seen["decoder"] - their_small).abs().max() <= 1e-4
    assert (final - their_final).abs().max() <= 1e-4
    assert seen["prior"].norm(dim=-1).min() > 1.5  # Karlo's embeddings stay raw, not unit norm


def test_export_and_reimport_give_the_same_tensors(models, tmp_path):
    exported, again = tmp_path / "exported", tmp_path / "again"
    assert convert(["to-diffusers", str(models), "--out", str(exported)]) == 0
    assert (exported / "model_index.json").is_file() and (exported / "image_encoder").is_dir()
    assert convert(["from-diffusers", str(exported), "--out", str(again)]) == 0  # picks up image_encoder/
    for stage in ("clip", "prior", "decoder", "upsampler1"):
        before, after = load_file(models / stage / "model.safetensors"), load_file(again / stage / "model.safetensors")
        assert before.keys() == after.keys(), stage
        assert all(torch.equal(before[k], after[k]) for k in before), stage
    for name in ("prior/prior_config.json", "decoder/decoder_config.json", "upsampler1/upsampler_config.json",
                 "clip/clip_spec.json"):
        assert (models / name).read_text() == (again / name).read_text(), name


def test_without_an_image_encoder_text_to_image_works_and_image_commands_say_why_not(karlo, tmp_path, capsys):
    from flows.variations import main as variations
    from unclip import UnclipPipeline

    out = tmp_path / "text-only"
    assert convert(["from-diffusers", str(karlo[0]), "--out", str(out)]) == 0
    pipe = UnclipPipeline.from_models_dir(out, progress=False)
    images = pipe.generate("a red square", steps={"prior": 2, "decoder": 2, "upsampler1": 2})
    assert images[0].size == (2 * IMAGE_SIZE,) * 2 and images[0].info["unclip"]["decoder_best_of"] == 1
    image = tmp_path / "in.png"
    images[0].save(image)
    assert variations(["--image", str(image), "--models", str(out), "--no-mlflow", "--out", str(tmp_path / "v")]) == 2
    assert "no image tower" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "not_diffusers", "other_pipeline", "nonempty_out"])
def test_bad_sources_are_one_error_line(case, karlo, tmp_path, capsys):
    source = {"missing": tmp_path / "nowhere", "not_diffusers": tmp_path,
              "other_pipeline": tmp_path / "variations", "nonempty_out": karlo[0]}[case]
    out = tmp_path / "out"
    if case == "other_pipeline":
        source.mkdir()
        (source / "model_index.json").write_text(json.dumps({"_class_name": "UnCLIPImageVariationPipeline"}))
    if case == "nonempty_out":
        out.mkdir()
        (out / "x").write_text("taken")
    assert convert(["from-diffusers", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_an_open_clip_cascade_with_patches_names_what_diffusers_lacks(tmp_path, capsys):
    from tiny_clips import make_open_clip

    from decoder.config import DecoderConfig
    from unclip.testing import build_tiny_models

    models = build_tiny_models(tmp_path / "models", make_open_clip)
    cfg = DecoderConfig.parse(json.loads((models / "decoder" / "decoder_config.json").read_text()))
    (models / "decoder" / "decoder_config.json").write_text(cfg.override(patch_size=2).to_json())
    assert convert(["to-diffusers", str(models), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot export")
    for part in ("clip: an open_clip CLIP", "decoder: patch_size 2", "upsampler1: conditioned on its augmentation",
                 "upsampler2: the pipeline has one", "prior: a learned null caption"):
        assert part in err[0]


def test_a_karlo_layout_this_project_cannot_build_is_named(tmp_path, capsys):
    from diffusers import UNet2DModel
    from karlo_tiny import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.register_modules(super_res_first=UNet2DModel(  # diffusers' default: attention in the middle block
        sample_size=2 * IMAGE_SIZE, layers_per_block=1, in_channels=6, out_channels=3, block_out_channels=(32, 64),
        down_block_types=("ResnetDownsampleBlock2D",) * 2, up_block_types=("ResnetUpsampleBlock2D",) * 2))
    pipe.save_pretrained(tmp_path / "pipeline")
    assert convert(["from-diffusers", str(tmp_path / "pipeline"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "super_res_first" in err and "add_attention=True (ours: False)" in err
