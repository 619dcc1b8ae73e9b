"""Variations of an image: its CLIP image embedding and the decoder's DDIM inversion of it, decoded
with DDIM η (0 reconstructs the image, larger η varies more), as a Prefect flow logged to MLflow.

    python -m flows.variations --image photo.png --num-images 4 --eta 0.5
    python -m flows.variations --image photo.png --eta 0 --models runs/models   # reconstruction
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from core.cli import float_in, int_in
from flows import inference as common
from unclip.images import load_image
from unclip.pipeline import UnclipPipeline
from unclip.settings import MANIPULATION_GUIDANCE


@task(cache_policy=NO_CACHE)
def make_variations(pipe: UnclipPipeline, image: str, n: int, eta: float, seed: int, steps, guidance,
                    output_size) -> list:
    return pipe.variations(image, n, eta, seed=seed, steps=steps, guidance=guidance, output_size=output_size)


@flow(name="unclip-variations", log_prints=True)
def variations_flow(image: str, num_images: int = 4, eta: float = 0.5, seed: int = 0,
                    steps: dict[str, Any] | None = None, guidance: dict[str, Any] | None = None,
                    output_size: int | None = None, models: str = "registry", ref: str = "champion",
                    versions: dict[str, str] | None = None, device: str | None = None, precision: str = "fp32",
                    compile: bool = False, threads: int | None = None, progress: bool = True,
                    out: str = "outputs/variations",
                    experiment: str | None = "unclip-inference") -> tuple[list[str], str | None]:
    pipe = common.load_pipeline(models, ref, versions, device, precision, compile, threads, progress)
    images = make_variations(pipe, image, num_images, eta, seed, steps, guidance, output_size)
    params = {"image": image, "num_images": num_images, "eta": eta, "seed": seed}
    return common.publish(images, out, "variations", params, experiment, drop=("seed", "eta"))


def build_parser() -> argparse.ArgumentParser:
    parser = common.command_parser("python -m flows.variations", __doc__, "outputs/variations")
    parser.add_argument("--image", required=True, help="the image to vary (PNG, JPEG, ...)")
    parser.add_argument("--num-images", "-n", type=int_in(1, common.MAX_IMAGES), default=4,
                        help="number of variations (default: 4)")
    parser.add_argument("--eta", type=float_in(0, 1), default=0.5, help="DDIM η in [0, 1]: 0 reconstructs (default: 0.5)")
    return parser


def run(args: argparse.Namespace) -> tuple[list[str], str | None]:
    load_image(args.image)
    common.preflight(args, MANIPULATION_GUIDANCE, images=True)
    return variations_flow(str(args.image), args.num_images, args.eta, **common.sampling_params(args),
                           **common.run_params(args))


def main(argv: list[str] | None = None) -> int:
    return common.run_command(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
