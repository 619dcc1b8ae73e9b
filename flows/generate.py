"""Text to image with the trained cascade, as a Prefect flow that logs the images to MLflow.

    python -m flows.generate --prompt "a red circle in the top left on a white background" --num-images 4
    python -m flows.generate --prompt "..." --models runs/models --steps prior=25,decoder=50 --guidance decoder=3
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from core.cli import int_in
from flows import inference as common
from unclip.errors import SettingsError
from unclip.pipeline import UnclipPipeline
from unclip.settings import DEFAULT_DECODER_BEST_OF
from unclip.stages import check_prompts


@task(cache_policy=NO_CACHE)
def generate_images(pipe: UnclipPipeline, prompts: list[str], num_images: int, seed: int, steps, guidance, sampler,
                    output_size, prior_best_of: int | None, batch_size: int, decoder_best_of: int | None = None) -> list:
    return pipe.generate(prompts, num_images, seed, steps, guidance, sampler, output_size, prior_best_of, batch_size,
                         decoder_best_of)


@flow(name="unclip-generate", log_prints=True)
def generate_flow(prompts: list[str], num_images: int = 1, seed: int = 0, steps: dict[str, Any] | None = None,
                  guidance: dict[str, Any] | None = None, sampler: Any = None, output_size: int | None = None,
                  prior_best_of: int | None = None, batch_size: int = 8, decoder_best_of: int | None = None,
                  models: str = "registry", ref: str = "champion",
                  versions: dict[str, str] | None = None, device: str | None = None, precision: str = "auto",
                  compile: bool = False, threads: int | None = None, progress: bool = True,
                  out: str = "outputs/generate",
                  experiment: str | None = "unclip-inference") -> tuple[list[str], str | None]:
    """PNGs (with provenance) and a grid in `out`, logged to MLflow `experiment`; returns (paths, run id)."""
    pipe = common.load_pipeline(models, ref, versions, device, precision, compile, threads, progress)
    images = generate_images(pipe, prompts, num_images, seed, steps, guidance, sampler, output_size, prior_best_of,
                             batch_size, decoder_best_of)
    params = {"prompts": prompts, "num_images": num_images, "seed": seed}
    return common.publish(images, out, "generate", params, experiment, drop=("prompt", "seed"),
                          columns=num_images if len(prompts) > 1 else None)


def build_parser() -> argparse.ArgumentParser:
    parser = common.command_parser("python -m flows.generate", __doc__, "outputs/generate", sampler=True)
    parser.add_argument("--prompt", action="append", required=True,
                        help="the caption to draw (repeat for several prompts; longer than CLIP's context: truncated "
                             "with a warning)")
    parser.add_argument("--num-images", type=int_in(1, common.MAX_IMAGES), default=1,
                        help="images per prompt (default: 1)")
    parser.add_argument("--prior-best-of", type=int_in(1, common.MAX_BEST_OF), default=None,
                        help="prior candidates per image; the one closest to the caption is kept (default: the "
                             "prior's own, else 2)")
    parser.add_argument("--decoder-best-of", type=int_in(1, common.MAX_BEST_OF), default=None,
                        help="decodes per image; the one the CLIP reads closest to its image embedding is kept "
                             f"(default: the decoder's own, else {DEFAULT_DECODER_BEST_OF}, the paper's single decode; "
                             "1 for a CLIP without an image tower)")
    parser.add_argument("--batch-size", type=int_in(1, common.MAX_BATCH), default=8,
                        help="images sampled together (default: 8); results do not depend on it")
    return parser


def run(args: argparse.Namespace) -> tuple[list[str], str | None]:
    prompts = check_prompts(args.prompt)
    if len(prompts) * args.num_images > common.MAX_IMAGES:
        raise SettingsError(f"{len(prompts)} prompts x --num-images {args.num_images} is more than "
                            f"{common.MAX_IMAGES} images; split the run")
    common.preflight(args, sampler=common.stage_sampler(args))
    return generate_flow(prompts, args.num_images, sampler=common.stage_sampler(args),
                         prior_best_of=args.prior_best_of, batch_size=args.batch_size,
                         decoder_best_of=args.decoder_best_of, **common.sampling_params(args),
                         **common.run_params(args))


def main(argv: list[str] | None = None) -> int:
    return common.run_command(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
