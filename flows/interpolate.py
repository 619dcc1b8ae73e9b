"""Interpolation between two images: slerp of their CLIP image embeddings, decoded from one fixed
x_T or from the slerp of both images' DDIM inversions (then both ends reconstruct), as a Prefect
flow logged to MLflow.

    python -m flows.interpolate --image-a a.png --image-b b.png --steps 7
    python -m flows.interpolate --image-a a.png --image-b b.png --steps 5 --noise fixed --sample-steps decoder=50
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from core.cli import ArgumentParser, int_in
from flows import inference as common
from unclip.images import load_image
from unclip.manipulate import NOISE_MODES
from unclip.pipeline import UnclipPipeline
from unclip.settings import MANIPULATION_GUIDANCE


@task(cache_policy=NO_CACHE)
def make_interpolation(pipe: UnclipPipeline, image_a: str, image_b: str, frames: int, noise: str, seed: int,
                       steps, guidance, output_size) -> list:
    return pipe.interpolate(image_a, image_b, frames, noise, seed=seed, sample_steps=steps, guidance=guidance,
                            output_size=output_size)


@flow(name="unclip-interpolate", log_prints=True)
def interpolate_flow(image_a: str, image_b: str, frames: int = 5, noise: str = "slerp", seed: int = 0,
                     steps: dict[str, Any] | None = None, guidance: dict[str, Any] | None = None,
                     output_size: int | None = None, models: str = "registry", ref: str = "champion",
                     versions: dict[str, str] | None = None, device: str | None = None, precision: str = "fp32",
                     compile: bool = False, threads: int | None = None, progress: bool = True,
                     out: str = "outputs/interpolate",
                     experiment: str | None = "unclip-inference") -> tuple[list[str], str | None]:
    pipe = common.load_pipeline(models, ref, versions, device, precision, compile, threads, progress)
    images = make_interpolation(pipe, image_a, image_b, frames, noise, seed, steps, guidance, output_size)
    labels = [f"theta={im.info['unclip']['theta']:.2f}" for im in images]
    paths = common.save_outputs(images, out, "interpolate", columns=len(images), labels=labels)
    params = {"image_a": image_a, "image_b": image_b, "frames": frames,
              **{k: v for k, v in images[0].info["unclip"].items() if k not in ("task", "source", "theta")}}
    return paths, common.log_outputs(paths, params, experiment, "interpolate")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m flows.interpolate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--image-a", required=True, help="the first image (θ = 0)")
    parser.add_argument("--image-b", required=True, help="the last image (θ = 1)")
    parser.add_argument("--steps", type=int_in(2, common.MAX_IMAGES), default=5, help="number of frames from a to b, ends included (default: 5)")
    parser.add_argument("--noise", choices=NOISE_MODES, default="slerp",
                        help="x_T of the frames: slerp of both inversions (ends reconstruct) or one fixed draw of "
                             "--seed (default: slerp)")
    common.add_sampling_options(parser, steps_flag="--sample-steps", sampler=False)
    common.add_model_options(parser)
    common.add_output_options(parser, "outputs/interpolate")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.runtime import run_flow_cli

    def job():
        load_image(args.image_a)
        load_image(args.image_b)
        common.preflight(args, MANIPULATION_GUIDANCE, images=True)
        paths, run_id = interpolate_flow(
            str(args.image_a), str(args.image_b), args.steps, args.noise, args.seed, common.stage_steps(args),
            common.stage_guidance(args), args.output_size, **common.model_params(args), out=args.out,
            experiment=None if args.no_mlflow else args.experiment)
        common.print_outputs(paths, run_id)
    return run_flow_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
