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

from core.cli import int_in
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
    params = {"image_a": image_a, "image_b": image_b, "frames": frames}
    return common.publish(images, out, "interpolate", params, experiment, drop=("theta",), columns=len(images),
                          labels=labels)


def build_parser() -> argparse.ArgumentParser:
    parser = common.command_parser("python -m flows.interpolate", __doc__, "outputs/interpolate",
                                   steps_flag="--sample-steps")
    parser.add_argument("--image-a", required=True, help="the first image (θ = 0)")
    parser.add_argument("--image-b", required=True, help="the last image (θ = 1)")
    parser.add_argument("--steps", type=int_in(2, common.MAX_IMAGES), default=5, help="number of frames from a to b, ends included (default: 5)")
    parser.add_argument("--noise", choices=NOISE_MODES, default="slerp",
                        help="x_T of the frames: slerp of both inversions (ends reconstruct) or one fixed draw of "
                             "--seed (default: slerp)")
    return parser


def run(args: argparse.Namespace) -> tuple[list[str], str | None]:
    load_image(args.image_a)
    load_image(args.image_b)
    common.preflight(args, MANIPULATION_GUIDANCE, images=True)
    return interpolate_flow(str(args.image_a), str(args.image_b), args.steps, args.noise,
                            **common.sampling_params(args), **common.run_params(args))


def main(argv: list[str] | None = None) -> int:
    return common.run_command(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
