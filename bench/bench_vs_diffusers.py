"""Speed of this pipeline against diffusers' deprecated UnCLIPPipeline, on the same weights and steps.

    python bench/bench_vs_diffusers.py                      # demo widths, prior 25 + decoder 25 steps
    python bench/bench_vs_diffusers.py --repeats 5 --json vs_diffusers.json
    python bench/bench_vs_diffusers.py --to-512 --threads 2  # text -> 512 px, both upsamplers

UnCLIPPipeline drives only Karlo's layout, so both run a cascade built here in that layout at the demo's
widths: a transformers CLIP text tower (token states as wide as the embedding, as in CLIP-L), our prior
(a diffusers PriorTransformer) and a decoder without the demo's draft, refiner, coordinate channels and
patches (a diffusers UNet2DConditionModel fed by UnCLIPTextProjModel). The networks are the same
objects in both pipelines; the weights are random, since this measures speed, not pictures. Each
pipeline makes one image of one prompt, with classifier-free guidance (conditional and unconditional
branches batched) in both stages, and one prior sample (no best-of, which diffusers lacks).
UnCLIPPipeline always runs its super-resolution stage: it gets a minimal U-Net and two steps (its least), and the
time inside it (forward hooks) is taken out of its total. Our upsamplers are not compared: diffusers
calls its super-resolution U-Nets without the noise-level labels ours are conditioned on.

Rounds alternate between the two pipelines after one warm-up each, so a noisy shared machine slows
them alike; the table gives median seconds and the ratio.

`--to-512` runs the whole cascade, text -> 512 px, with the demo's upsamplers (32 -> 128 in 1 step,
128 -> 512 in 4). UnCLIPPipeline has one super-resolution stage and calls it without the noise-level
labels ours take: it gets our first upsampler behind a view that supplies them, in its own loop, with
diffusers' DDIM scheduler for the same single step (its UnCLIPScheduler needs at least 2), so text ->
128 px is the part both pipelines run.
It has no second super-resolution stage: its 512 px figure adds our second upsampler run in fp32 as
diffusers runs networks, in the dtype of their weights. Ours runs with `--precision` (default auto).
diffusers is timed twice: as built (fp32 networks) and with the networks cast to bf16 (`.to(bfloat16)`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from clip.spec import ClipSpec  # noqa: E402
from decoder.config import settings_for as decoder_settings  # noqa: E402
from decoder.io import save_decoder  # noqa: E402
from decoder.model import Decoder  # noqa: E402
from prior.io import save_prior  # noqa: E402
from prior.model import DiffusionPrior  # noqa: E402
from prior.train import settings_for as prior_settings  # noqa: E402
from unclip import UnclipPipeline  # noqa: E402

PROMPT = "a small red circle in the top left on a white background"
WIDTH = 128  # the demo CLIP's embedding and caption width (its 16-token context is tiny_clips')


def make_clip(folder: Path) -> ClipSpec:
    """A transformers CLIP with the demo CLIP's text tower shape (3 layers, 128 wide, 16 tokens)."""
    from tiny_clips import make_hf_clip

    spec = make_hf_clip(folder, embed_dim=WIDTH, text_changes={
        "hidden_size": WIDTH, "intermediate_size": 4 * WIDTH, "num_hidden_layers": 3, "num_attention_heads": 4})
    spec.save(folder)
    return spec


def build(root: Path) -> tuple[UnclipPipeline, object]:
    """(our pipeline, diffusers' UnCLIPPipeline) over the same prior and decoder networks."""
    spec = make_clip(root / "clip")
    torch.manual_seed(0)
    prior = DiffusionPrior(prior_settings("demo").prior.for_clip(spec.embed_dim, spec.context_length, spec.text_width),
                           clip_spec=spec).eval()
    prior.set_stats(torch.zeros(spec.embed_dim), torch.full((spec.embed_dim,), spec.embed_dim**-0.5))
    save_prior(root / "prior", prior, spec)
    demo = decoder_settings("demo").decoder
    plain = demo.override(patch_size=1, coord_channels=False, draft_width=0, refine_width=0,
                          unet=demo.unet.override(attention_resolutions=(16, 8)),  # the same levels, unpatched
                          noise=demo.noise.override(prediction="epsilon", snr_shift=1.0))
    decoder = Decoder(plain.for_clip(spec.embed_dim, spec.text_width)).eval()
    save_decoder(root / "decoder", decoder, spec)
    ours = UnclipPipeline.from_folders(root / "clip", root / "prior", root / "decoder", progress=False)
    return ours, diffusers_pipeline(root / "clip", ours)


def diffusers_pipeline(clip_folder: Path, ours: UnclipPipeline):
    from diffusers import UnCLIPPipeline, UnCLIPScheduler, UNet2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    decoder = ours.cascade.decoder
    size = decoder.cfg.image_size
    super_res = UNet2DModel(sample_size=2 * size, in_channels=6, out_channels=3, block_out_channels=(8,),
                            down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), layers_per_block=1,
                            norm_num_groups=8).eval()
    return UnCLIPPipeline(
        prior=ours.cascade.prior.prior, decoder=LearnedVarianceView(decoder.unet), text_proj=decoder.text_proj,
        text_encoder=CLIPTextModelWithProjection.from_pretrained(clip_folder).eval(),
        tokenizer=CLIPTokenizer.from_pretrained(clip_folder), super_res_first=super_res, super_res_last=super_res,
        prior_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                        clip_sample_range=10.0),
        decoder_scheduler=UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon"),
        super_res_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon"),
    )


class LearnedVarianceView(torch.nn.Module):
    """Our fixed-variance U-Net as UnCLIPPipeline's decoder, which splits off Karlo's learned-variance
    channels: the same network, its output followed by 3 zero channels (a midway variance)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.config = unet.config

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def forward(self, sample, timestep, **kw):
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        out = self.unet(sample, timestep, **kw).sample
        return UNet2DConditionOutput(sample=torch.cat([out, torch.zeros_like(out)], dim=1))


class Stopwatch:
    """Seconds spent inside a module's forward calls."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds = 0.0
        module.register_forward_pre_hook(lambda *_: setattr(self, "_start", time.perf_counter()))
        module.register_forward_hook(lambda *_: setattr(self, "seconds", self.seconds + time.perf_counter() - self._start))


class LevelView(torch.nn.Module):
    """Our upsampler as UnCLIPPipeline's super-resolution U-Net: it splits the pipeline's 6-channel input into
    the noisy image and the upsampled condition, and supplies the noise level diffusers does not pass."""

    def __init__(self, upsampler: torch.nn.Module, level: float) -> None:
        super().__init__()
        self.upsampler, self.level = upsampler, level
        self.config = upsampler.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.upsampler.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.upsampler.unet.device

    def forward(self, sample, timestep, **kw):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        b = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device).expand(b)
        out = self.upsampler(sample[:, :3], t, sample[:, 3:], torch.full((b,), self.level, device=sample.device))
        return UNet2DOutput(sample=out.to(sample.dtype))


def build_cascade(root: Path, tiny: bool = False, precision: str = "auto") -> tuple[UnclipPipeline, object, object]:
    """(our pipeline to 512 px, diffusers' UnCLIPPipeline to 128 px, our second upsampler) over the same networks."""
    from upsamplers.config import settings_for as upsampler_settings
    from upsamplers.io import save_upsampler
    from upsamplers.model import Upsampler

    build(root)  # the CLIP, prior and decoder folders
    folders = []
    for stage in (1, 2):
        cfg = upsampler_settings(stage, "demo").upsampler
        if tiny:  # 32 -> 64 -> 128, narrow
            cfg = cfg.override(low_res=32 * 2 ** (stage - 1), high_res=64 * 2 ** (stage - 1),
                               model=cfg.model.override(channels=(8, 16)))
        torch.manual_seed(stage)
        model = Upsampler(cfg).eval()
        torch.nn.init.normal_(model.unet.conv_out.weight, std=0.02)  # not the bicubic image alone
        folders.append(save_upsampler(root / f"upsampler{stage}", model))
    ours = UnclipPipeline.from_folders(root / "clip", root / "prior", root / "decoder", *folders, progress=False,
                                       precision=precision)
    first, second = ours.cascade.upsamplers["upsampler1"], ours.cascade.upsamplers["upsampler2"]
    view = LevelView(first, first.cfg.aug_level).eval()
    theirs = diffusers_pipeline(root / "clip", ours)
    theirs.register_modules(super_res_first=view, super_res_last=view,
                            super_res_scheduler=PipelineDDIM(set_alpha_to_one=True, **first.cfg.noise.scheduler_config()))
    return ours, theirs, second


class PipelineDDIM(DDIMScheduler):
    """diffusers' DDIM (our upsamplers' sampler) behind the step signature UnCLIPPipeline calls: its own
    UnCLIPScheduler cannot take the first upsampler's single step."""

    def step(self, model_output, timestep, sample, prev_timestep=None, generator=None, **kw):
        return super().step(model_output, timestep, sample)


def bench_cascade(repeats: int = 3, tiny: bool = False, precision: str = "auto", prior_steps: int = 25,
                  decoder_steps: int = 25, guidance: tuple[float, float] = (4.0, 8.0)) -> dict:
    """Median seconds of text -> 512 px (ours) against diffusers' text -> 128 px plus our second upsampler in
    fp32, fp32 and bf16 networks for diffusers; interleaved rounds after one warm-up."""
    import copy

    from upsamplers.sample import upsample

    with tempfile.TemporaryDirectory(prefix="bench-vs-diffusers-") as root:
        ours, theirs, second = build_cascade(Path(root), tiny, precision)
    theirs.set_progress_bar_config(disable=True)
    theirs_bf16 = copy.deepcopy(theirs).to(dtype=torch.bfloat16)
    plan = ours.plan({"prior": prior_steps, "decoder": decoder_steps}, {"prior": guidance[0], "decoder": guidance[1]})
    up_steps = {stage: plan.steps[stage] for stage in ("upsampler1", "upsampler2")}

    def run_ours(seed: int) -> dict[str, float]:
        start = time.perf_counter()
        ours.generate_tensors([PROMPT], 1, seed, plan, prior_best_of=1, decoder_best_of=1)
        return {"128 px": time.perf_counter() - start - ours.timings["upsampler2"], "512 px": time.perf_counter() - start}

    def diffusers_run(pipe):
        def run(seed: int) -> dict[str, float]:
            start = time.perf_counter()
            image = pipe(PROMPT, prior_num_inference_steps=prior_steps, decoder_num_inference_steps=decoder_steps,
                         super_res_num_inference_steps=up_steps["upsampler1"], prior_guidance_scale=guidance[0],
                         decoder_guidance_scale=guidance[1], generator=torch.Generator().manual_seed(seed),
                         output_type="pt").images
            at_128 = time.perf_counter() - start
            low = torch.as_tensor(image).permute(0, 3, 1, 2).float() * 2 - 1  # its output: NHWC numpy in [0, 1]
            upsample(second, low, steps=up_steps["upsampler2"], precision="fp32")
            return {"128 px": at_128, "512 px": time.perf_counter() - start}
        return run

    runs = {"unclip": run_ours, "diffusers fp32": diffusers_run(theirs), "diffusers bf16": diffusers_run(theirs_bf16)}
    failed = {}
    with torch.inference_mode():
        try:
            runs["diffusers bf16"](0)
        except (RuntimeError, NotImplementedError) as err:  # what diffusers cannot run here is reported, not timed
            failed["diffusers bf16"] = f"{type(err).__name__}: {err}"
            del runs["diffusers bf16"]
    times: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    with torch.inference_mode():
        for repeat in range(repeats + 1):
            for name, run in runs.items():
                seconds = run(repeat)
                if repeat:
                    times[name].append(seconds)
                print(f"round {repeat} {name}: {seconds['512 px']:.3f}s", file=sys.stderr)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in ("128 px", "512 px")} for name, rs in times.items()}
    ratios = {f"ratio_vs_{name.replace(' ', '_')}": {k: medians[name][k] / medians["unclip"][k] for k in medians[name]}
              for name in medians if name != "unclip"}
    return {"median_seconds": medians, "threads": torch.get_num_threads(), "precision": precision,
            "steps": {"prior": prior_steps, "decoder": decoder_steps, **up_steps},
            "guidance": {"prior": guidance[0], "decoder": guidance[1]}, "failed": failed, **ratios}


def cascade_table(result: dict) -> str:
    lines = ["| pipeline | text -> 128 px (s) | text -> 512 px (s) |", "|---|---|---|"]
    for name, row in result["median_seconds"].items():
        lines.append(f"| {name} | {row['128 px']:.3f} | {row['512 px']:.3f} |")
    for key, ratio in result.items():
        if key.startswith("ratio_vs_"):
            lines.append(f"ours ({result['precision']}) against {key.removeprefix('ratio_vs_').replace('_', ' ')}: "
                         f"{ratio['128 px']:.2f}x at 128 px, {ratio['512 px']:.2f}x at 512 px")
    for name, why in result["failed"].items():
        lines.append(f"{name} does not run here: {why}")
    lines.append(f"(steps {result['steps']}, guidance {result['guidance']}, {result['threads']} threads; 512 px on "
                 "diffusers' side: its 128 px pipeline plus our second upsampler in fp32: it has no second stage)")
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-vs-diffusers-") as root:
        ours, theirs = build(Path(root))  # everything is loaded: the folders can go
    theirs.set_progress_bar_config(disable=True)
    super_res = Stopwatch(theirs.super_res_first)
    plan = ours.plan({"prior": args.prior_steps, "decoder": args.decoder_steps},
                     {"prior": args.prior_guidance, "decoder": args.decoder_guidance})

    def run_ours(seed: int) -> float:
        start = time.perf_counter()
        ours.generate_tensors([PROMPT], 1, seed, plan, prior_best_of=1, decoder_best_of=1)
        return time.perf_counter() - start

    def run_theirs(seed: int) -> float:
        super_res.seconds = 0.0
        start = time.perf_counter()
        theirs(PROMPT, num_images_per_prompt=1, prior_num_inference_steps=args.prior_steps,
               decoder_num_inference_steps=args.decoder_steps, super_res_num_inference_steps=2,
               prior_guidance_scale=args.prior_guidance, decoder_guidance_scale=args.decoder_guidance,
               generator=torch.Generator().manual_seed(seed), output_type="pt")
        return time.perf_counter() - start - super_res.seconds

    times: dict[str, list[float]] = {"unclip": [], "diffusers UnCLIPPipeline": []}
    with torch.inference_mode():
        for repeat in range(args.repeats + 1):  # round 0 warms up
            for name, run in zip(times, (run_ours, run_theirs)):
                seconds = run(repeat)
                if repeat:
                    times[name].append(seconds)
                print(f"round {repeat} {name}: {seconds:.3f}s", file=sys.stderr)
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    return {"steps": {"prior": args.prior_steps, "decoder": args.decoder_steps},
            "guidance": {"prior": args.prior_guidance, "decoder": args.decoder_guidance},
            "decoder_size": ours.cascade.decoder.cfg.image_size, "threads": torch.get_num_threads(),
            "repeats": args.repeats, "median_seconds": medians,
            "ratio_diffusers_over_ours": medians["diffusers UnCLIPPipeline"] / medians["unclip"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior-steps", type=int, default=25)
    parser.add_argument("--decoder-steps", type=int, default=25)
    parser.add_argument("--prior-guidance", type=float, default=4.0, help="Karlo's (default: 4)")
    parser.add_argument("--decoder-guidance", type=float, default=8.0, help="Karlo's (default: 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--to-512", action="store_true", help="the whole cascade, text -> 512 px (see above)")
    parser.add_argument("--precision", default="auto", help="ours with --to-512: fp32, bf16 or auto (default)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.to_512:
        result = bench_cascade(args.repeats, precision=args.precision, prior_steps=args.prior_steps,
                               decoder_steps=args.decoder_steps, guidance=(args.prior_guidance, args.decoder_guidance))
        print(cascade_table(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    result = bench(args)
    print("| pipeline | median seconds per image (text → prior → decoder) |\n|---|---|")
    for name, seconds in result["median_seconds"].items():
        print(f"| {name} | {seconds:.3f} |")
    print(f"diffusers / ours: {result['ratio_diffusers_over_ours']:.2f}x "
          f"({result['steps']}, guidance {result['guidance']}, {result['decoder_size']} px, {result['threads']} threads)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
