"""The inference pipeline on tiny random models of every stage: shapes, seeds, batch-size independence,
manipulations, provenance and the user errors."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_clips import make_open_clip

from core.candidates import candidate_seeds
from core.diffusion import initial_noise
from core.errors import CheckpointError, ClipMismatchError
from decoder.sample import decode
from unclip import ImageFileError, ModelNotFoundError, PromptError, SettingsError, UnclipPipeline
from unclip.pipeline import check_prompts, select_rows, stage_seeds
from unclip.provenance import read_png_metadata, save_run
from unclip.settings import DEFAULT_DECODER_BEST_OF, parse_stage_values
from unclip.sources import from_models_dir
from unclip.testing import build_tiny_models, save_tiny_prior, shared_tiny_models

FAST = {"prior": 2, "decoder": 2, "upsampler1": 1, "upsampler2": 1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny networks on shared cores: one thread is many times faster than two contending ones.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return shared_tiny_models(tmp_path_factory, make_open_clip)


@pytest.fixture(scope="module")
def pipe(models):
    return UnclipPipeline.from_models_dir(models, progress=False)


def tensors(images):
    return torch.stack([torch.from_numpy(np.array(im)).float() for im in images])


def test_generate_sizes_and_provenance(pipe):
    assert pipe.sizes == [16, 32, 64]
    images = pipe.generate(["a red circle", "a blue square"], num_images=2, seed=5, steps=FAST)
    assert len(images) == 4 and all(im.size == (64, 64) for im in images)
    record = images[3].info["unclip"]
    assert record["prompt"] == "a blue square" and record["seed"] == 8
    assert record["best_of"] == 2 and record["decoder_best_of"] == DEFAULT_DECODER_BEST_OF
    assert record["steps"] == FAST and record["guidance"] == {"prior": 1.0, "decoder": 1.0}
    assert record["clip_fingerprint"] == pipe.info.spec.fingerprint()
    assert set(record["models"]) == {"clip", "prior", "decoder", "upsampler1", "upsampler2"}
    assert set(pipe.timings) == {"clip", "prior", "decoder", "upsampler1", "upsampler2"}
    small = pipe.generate("a red circle", steps=FAST, output_size=16)
    assert small[0].size == (16, 16) and small[0].info["unclip"]["steps"] == {"prior": 2, "decoder": 2}


def test_every_stage_and_candidate_draws_its_own_noise():
    """torch keeps only the low 32 bits of a seed: streams 2**32 apart would draw the same numbers."""
    seeds = [0, 1, 2]
    streams = [stage_seeds(seeds, stage) for stage in ("prior", "decoder", "upsampler1", "upsampler2")]
    streams += [candidate_seeds(seeds, 3)[k::3] for k in (1, 2)]
    starts = {tuple(initial_noise([s], (4,), "cpu")[0].tolist()) for stream in streams for s in stream}
    assert len(starts) == len(streams) * len(seeds)
    assert torch.equal(initial_noise([5 + 2**32], (4,), "cpu"), initial_noise([5 + 2**32], (4,), "cpu"))
    assert not torch.equal(initial_noise([5 + 2**32], (4,), "cpu"), initial_noise([5], (4,), "cpu"))


def test_seeded_and_batch_size_independent(pipe):
    prompts = ["a red circle", "a green triangle", "a blue square"]
    plan = pipe.plan(FAST, None, "ddim", 32)
    together = pipe.generate_tensors(prompts, 1, 11, plan, batch_size=3)
    one_by_one = pipe.generate_tensors(prompts, 1, 11, plan, batch_size=1)
    torch.testing.assert_close(together, one_by_one, atol=2e-3, rtol=0)
    alone = pipe.generate_tensors(prompts[1:2], 1, 12, plan)  # image 1 of the batch had seed 12
    torch.testing.assert_close(alone[0], together[1], atol=2e-3, rtol=0)
    other_seed = pipe.generate_tensors(prompts, 1, 99, plan)
    assert (other_seed - together).abs().max() > 0.05


def test_decoder_best_of_keeps_one_of_its_seeded_candidates(pipe):
    plan = pipe.plan(FAST, None, "ddim", 16)
    text = pipe.encode_text(["a red circle", "a blue square"])
    z = pipe.sample_prior(text, [3, 4], plan)
    best = pipe.decode(z, text, [3, 4], plan, best_of=3)
    decoder_seeds = [candidate_seeds(stage_seeds([s], "decoder"), 3) for s in (3, 4)]
    candidates = torch.stack([decode(pipe.cascade.decoder, z, text, [c[k] for c in decoder_seeds], steps=2,
                                     guidance=plan["guidance"]["decoder"])
                              for k in range(3)], 1)
    assert (candidates[:, 0] - candidates[:, 1]).abs().max() > 1e-3
    for b in range(2):
        assert min(float((best[b] - candidates[b, k]).abs().max()) for k in range(3)) < 1e-4
    image = pipe.generate("a red circle", steps=FAST, output_size=16, decoder_best_of=2)[0]
    assert image.info["unclip"]["decoder_best_of"] == 2 and image.info["unclip"]["best_of"] == 2
    with pytest.raises(SettingsError, match="at least 1"):
        pipe.generate("a red circle", steps=FAST, decoder_best_of=0)


def test_bf16_autocast(pipe):
    plan = pipe.plan(FAST, None, "ddim", 32)
    reference = pipe.generate_tensors(["a red circle"], 1, 0, plan)
    pipe.precision = "bf16"
    try:
        image = pipe.generate("a red circle", steps=FAST, output_size=32)[0]
        lowered = pipe.generate_tensors(["a red circle"], 1, 0, plan)
    finally:
        pipe.precision = "fp32"
    assert image.info["unclip"]["precision"] == "bf16"
    assert torch.isfinite(lowered).all() and (lowered - reference).abs().mean() < 0.2


def test_variations_eta_zero_reconstructs_and_eta_varies(pipe, tmp_path):
    source = Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy())
    path = tmp_path / "source.png"
    source.save(path)
    steps = {"decoder": 20}
    same = pipe.variations(path, n=2, eta=0.0, steps=steps, output_size=16)
    x = tensors([source]) / 127.5 - 1
    recon = tensors(same) / 127.5 - 1
    assert (recon[0] - recon[1]).abs().max() == 0
    psnr = 10 * torch.log10(4 / ((recon[0] - x[0]) ** 2).mean())
    assert psnr > 25, f"eta 0 reconstruction PSNR {psnr:.1f} dB"
    varied = pipe.variations(path, n=2, eta=1.0, steps=steps, output_size=16)
    assert (tensors(varied)[0] - tensors(varied)[1]).abs().max() > 0
    assert varied[1].info["unclip"]["seed"] == 1 and varied[0].info["unclip"]["eta"] == 1.0


def test_interpolation_ends_reconstruct_with_slerp_noise(pipe):
    a = Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy())
    b = Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy())
    frames = pipe.interpolate(a, b, steps=3, noise="slerp", sample_steps={"decoder": 20}, output_size=16)
    assert [f.info["unclip"]["theta"] for f in frames] == [0.0, 0.5, 1.0]
    for frame, image in ((frames[0], a), (frames[-1], b)):
        err = (tensors([frame]) - tensors([image])).abs().mean() / 255
        assert err < 0.03
    fixed = pipe.interpolate(a, b, steps=2, noise="fixed", sample_steps={"decoder": 2})
    assert len(fixed) == 2 and fixed[0].size == (64, 64)


def test_text_diff_frames(pipe):
    image = Image.new("RGB", (20, 24), (200, 30, 30))
    frames = pipe.text_diff(image, "a red circle", "a blue circle", thetas=[0.0, 0.25, 0.5],
                            steps={"decoder": 2}, output_size=32)
    assert len(frames) == 3 and frames[0].size == (32, 32)
    record = frames[2].info["unclip"]
    assert record["theta"] == 0.5 and record["to_caption"] == "a blue circle"
    with pytest.raises(SettingsError, match="same CLIP text embedding"):
        pipe.text_diff(image, "a red circle", "a red circle", thetas=[0.1])
    with pytest.raises(SettingsError, match=r"\[0, 1\]"):
        pipe.text_diff(image, "a red circle", "a blue circle", thetas=[1.5])


def test_text_diff_caption_blend(pipe):
    image = Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy())
    kw = {"steps": {"decoder": 20}, "output_size": 16}
    blend = pipe.text_diff(image, "a red circle", "a blue circle", thetas=[0.0, 0.25, 0.5], **kw)
    plain = pipe.text_diff(image, "a red circle", "a blue circle", thetas=[0.0, 0.5], caption="none", **kw)
    assert blend[0].info["unclip"]["caption"] == "blend" and plain[0].info["unclip"]["caption"] == "none"
    # θ = 0 decodes under the caption the image was inverted with: the image comes back
    assert (tensors(blend[:1]) - tensors([image])).abs().mean() / 255 < 0.03
    assert not torch.equal(tensors(blend[2:]), tensors(plain[1:]))  # the decoder read the new caption
    with pytest.raises(SettingsError, match="caption must be one of blend, none"):
        pipe.text_diff(image, "a red circle", "a blue circle", thetas=[0.5], caption="both")
    with pytest.raises(SettingsError, match="decoder guidance 2"):
        pipe.text_diff(image, "a red circle", "a blue circle", thetas=[0.5], guidance={"decoder": 2.0})
    guided = pipe.text_diff(image, "a red circle", "a blue circle", thetas=[0.5], caption="none",
                            guidance={"decoder": 2.0}, steps={"decoder": 2}, output_size=16)
    assert len(guided) == 1


def test_text_diff_prior_direction(pipe):
    from unclip.manipulate import _prior_shift

    image = Image.new("RGB", (16, 16), (200, 30, 30))
    kw = {"steps": {"prior": 2, "decoder": 2}, "output_size": 16}
    by_prior = pipe.text_diff(image, "a red circle", "a blue circle", thetas=[0.0, 1.0, 2.0], direction="prior",
                              draws=2, **kw)
    by_text = pipe.text_diff(image, "a red circle", "a blue circle", thetas=[0.0], **kw)
    assert torch.equal(tensors(by_prior[:1]), tensors(by_text))  # θ = 0 decodes z_i either way
    assert not torch.equal(tensors(by_prior[:1]), tensors(by_prior[1:2]))
    assert by_prior[2].info["unclip"]["direction"] == "prior" and by_text[0].info["unclip"]["direction"] == "text"
    # the shift is the difference of the mean prior draws of the two captions under shared seeds
    text = pipe.encode_text(["a red circle", "a blue circle"])
    plan = pipe.plan({"prior": 2}, None)
    shift = _prior_shift(pipe, text, plan, draws=2)
    red = pipe.sample_prior(select_rows(text, [0, 0]), [0, 1], plan)
    blue = pipe.sample_prior(select_rows(text, [1, 1]), [0, 1], plan)
    torch.testing.assert_close(shift, blue.mean(0) - red.mean(0))
    for bad, pattern in (({"thetas": [2.5], "direction": "prior"}, r"\[0, 2\]"),
                         ({"thetas": [0.5], "direction": "image"}, "direction must be one of text, prior"),
                         ({"thetas": [0.5], "direction": "prior", "draws": 0}, "draws must be at least 1")):
        with pytest.raises(SettingsError, match=pattern):
            pipe.text_diff(image, "a red circle", "a blue circle", **bad)


def test_png_metadata_round_trip(pipe, tmp_path):
    images = pipe.generate(["ünïcode prompt"], num_images=2, steps=FAST, output_size=16)
    paths, grid = save_run(images, tmp_path, "gen", grid_record={"note": "grid"})
    meta = read_png_metadata(paths[1])
    assert meta["prompt"] == "ünïcode prompt" and meta["seed"] == 1 and meta["steps"] == {"prior": 2, "decoder": 2}
    assert meta["models"]["prior"]["name"] == "folder" and meta["sampler"]["decoder"] == "ddim"
    assert read_png_metadata(grid)["images"] == ["gen-000.png", "gen-001.png"]
    assert Image.open(grid).size[0] > 16


# ---- user errors -----------------------------------------------------------------------------

def test_prompt_errors_and_truncation_warning(pipe, caplog):
    for bad in ([], [""], ["ok", "   "]):
        with pytest.raises(PromptError):
            check_prompts(bad)
    with pytest.raises(PromptError, match="empty"):
        pipe.generate("  ", steps=FAST)
    with caplog.at_level(logging.WARNING, logger="unclip"):
        pipe.generate(" ".join(["circle"] * 40), steps=FAST, output_size=16)
    assert "truncated" in caplog.text


def test_image_file_errors(pipe, tmp_path):
    with pytest.raises(ImageFileError, match="does not exist"):
        pipe.variations(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageFileError, match="not an image"):
        pipe.variations(text)
    truncated = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(ImageFileError):
        pipe.variations(truncated)
    with pytest.raises(ImageFileError, match="not a file"):
        pipe.variations(tmp_path)


def test_impossible_sizes_and_steps(pipe):
    with pytest.raises(SettingsError, match="output size 100 is impossible.*16, 32, 64"):
        pipe.generate("a red circle", output_size=100)
    with pytest.raises(SettingsError, match="between 1 and 50"):
        pipe.generate("a red circle", steps={"decoder": 500})
    with pytest.raises(SettingsError, match="at least 1"):
        pipe.generate("a red circle", steps={"prior": 0})
    with pytest.raises(SettingsError, match="whole number"):
        pipe.generate("a red circle", steps={"prior": "many"})
    with pytest.raises(SettingsError, match="unknown stage"):
        pipe.generate("a red circle", steps={"upsampler3": 2})
    with pytest.raises(SettingsError, match=r"in \[1, 50\]"):
        pipe.generate("a red circle", guidance={"decoder": -1})
    with pytest.raises(SettingsError, match=r"in \[1, 50\]"):
        pipe.generate("a red circle", guidance={"decoder": 1e30})
    with pytest.raises(SettingsError, match="unknown sampler"):
        pipe.generate("a red circle", sampler="euler")
    with pytest.raises(SettingsError, match="at least 2 frames"):
        pipe.interpolate("a.png", "b.png", steps=1)
    with pytest.raises(SettingsError, match="unknown stage 'deocder'"):
        parse_stage_values("prior=2,deocder=3", ("prior", "decoder"), "steps")


def test_unknown_model_folders(models, tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist.*flows.train"):
        from_models_dir(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(models / "clip", partial / "clip")
    with pytest.raises(ModelNotFoundError, match=r"lacks prior, decoder.*found: clip.*flows.train"):
        from_models_dir(partial)
    only_second = tmp_path / "second"
    for stage in ("clip", "prior", "decoder", "upsampler2"):
        shutil.copytree(models / stage, only_second / stage)
    with pytest.raises(ModelNotFoundError, match="upsampler2 without an upsampler1"):
        from_models_dir(only_second)
    empty = tmp_path / "empty"
    for stage in ("clip", "prior", "decoder"):
        (empty / stage).mkdir(parents=True)
    with pytest.raises(ModelNotFoundError, match="clip_spec.json"):
        UnclipPipeline.from_models_dir(empty)


def test_mixed_clips_and_broken_cascades(models, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(models, mixed)
    other = make_open_clip(tmp_path / "other_clip", seed=1)
    save_tiny_prior(mixed / "prior", other)
    with pytest.raises(ClipMismatchError, match="the prior in .* was trained with CLIP"):
        UnclipPipeline.from_models_dir(mixed)
    chain = tmp_path / "chain"
    shutil.copytree(models, chain)
    shutil.rmtree(chain / "upsampler1")
    shutil.copytree(models / "upsampler2", chain / "upsampler1")
    with pytest.raises(CheckpointError, match="takes 32px images but the decoder makes 16px"):
        UnclipPipeline.from_models_dir(chain)
    (chain / "decoder" / "decoder_config.json").write_text(json.dumps({"image_size": "big"}))
    with pytest.raises(CheckpointError, match="decoder_config.json"):
        UnclipPipeline.from_models_dir(chain)


def test_moved_clip_folder_still_loads(models, tmp_path):
    """The ClipSpec names files where training left them; a copied folder (or a registry download) works."""
    moved = tmp_path / "moved"
    shutil.copytree(models, moved)
    spec_path = moved / "clip" / "clip_spec.json"
    data = json.loads(spec_path.read_text())
    data["model"] = "/gone/" + data["model"].rsplit("/", 1)[-1]
    data["pretrained"] = "/gone/" + data["pretrained"].rsplit("/", 1)[-1]
    spec_path.write_text(json.dumps(data))
    pipe = UnclipPipeline.from_models_dir(moved, progress=False)
    assert pipe.generate("a red circle", steps=FAST, output_size=16)[0].size == (16, 16)


def test_two_stage_cascade_without_upsamplers(tmp_path):
    root = build_tiny_models(tmp_path / "m", make_open_clip, upsamplers=0)
    pipe = UnclipPipeline.from_models_dir(root, progress=False)
    assert pipe.sizes == [16]
    assert pipe.generate("a red circle", steps=FAST)[0].size == (16, 16)


def test_text_diff_best_of_keeps_the_frame_clip_reads_closest_to_z_theta(pipe):
    from unclip.images import tensor_to_images
    from unclip.manipulate import _embed_and_invert, _plan
    from unclip.slerp import slerp

    image = Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy())
    kw = {"thetas": [0.0, 0.3, 0.5], "caption": "none", "seed": 7, "steps": {"decoder": 3}, "output_size": 16}
    single = pipe.text_diff(image, "a red circle", "a blue circle", best_of=1, **kw)
    best = pipe.text_diff(image, "a red circle", "a blue circle", best_of=3, **kw)
    assert "candidate" not in single[1].info["unclip"] and single[1].info["unclip"]["best_of"] == 1
    assert best[0].info["unclip"]["candidate"] == 0 and torch.equal(tensors(best[:1]), tensors(single[:1]))
    # rebuild every candidate of the edited frames: the η = 0 frame and η = 0.5 decodes of the same x_T
    plan = _plan(pipe, kw["steps"], None, 16)
    z_i, x_t = _embed_and_invert(pipe, [image], plan)
    text = pipe.encode_text(["a red circle", "a blue circle"])
    z_d = torch.nn.functional.normalize(text.embeds[1] - text.embeds[0], dim=-1)
    seeds = candidate_seeds([7], 3)
    for frame, theta in zip(best[1:], kw["thetas"][1:]):
        z = slerp(z_i[0], z_d, theta)[None]
        candidates = torch.cat([pipe.decode(z, None, [s], plan, x_t=x_t.clone(), eta=0.0 if k == 0 else 0.5)
                                for k, s in enumerate(seeds)])
        cos = torch.nn.functional.cosine_similarity(pipe.cascade.encoder.encode_pixels(candidates), z)
        kept = frame.info["unclip"]["candidate"]
        assert kept == int(cos.argmax()) and frame.info["unclip"]["best_of_eta"] == 0.5
        assert torch.equal(tensors([frame]), tensors(tensor_to_images(candidates[kept:kept + 1])))
        if kept == 0:
            assert torch.equal(tensors([frame]), tensors(single[kw["thetas"].index(theta):][:1]))
    for bad, pattern in (({"best_of": 0}, "best_of must be at least 1"), ({"best_of_eta": 0.0}, r"best_of_eta")):
        with pytest.raises(SettingsError, match=pattern):
            pipe.text_diff(image, "a red circle", "a blue circle", **bad)
