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

from core.cli import ArgumentParser, float_in, int_in
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
    paths = common.save_outputs(images, out, "variations")
    params = {"image": image, "num_images": num_images, "eta": eta, "seed": seed,
              **{k: v for k, v in images[0].info["unclip"].items() if k not in ("seed", "task", "source", "eta")}}
    return paths, common.log_outputs(paths, params, experiment, "variations")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m flows.variations", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--image", required=True, help="the image to vary (PNG, JPEG, ...)")
    parser.add_argument("--num-images", "-n", type=int_in(1, common.MAX_IMAGES), default=4,
                        help="number of variations (default: 4)")
    parser.add_argument("--eta", type=float_in(0, 1), default=0.5, help="DDIM η in [0, 1]: 0 reconstructs (default: 0.5)")
    common.add_sampling_options(parser, sampler=False)
    common.add_model_options(parser)
    common.add_output_options(parser, "outputs/variations")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.runtime import run_flow_cli

    def job():
        load_image(args.image)
        common.preflight(args, MANIPULATION_GUIDANCE, images=True)
        paths, run_id = variations_flow(
            str(args.image), args.num_images, args.eta, args.seed, common.stage_steps(args),
            common.stage_guidance(args), args.output_size, **common.model_params(args), out=args.out,
            experiment=None if args.no_mlflow else args.experiment)
        common.print_outputs(paths, run_id)
    return run_flow_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
