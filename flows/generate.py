"""Text to image with the trained cascade, as a Prefect flow that logs the images to MLflow.

    python -m flows.generate --prompt "a red circle in the top left on a white background" --num-images 4
    python -m flows.generate --prompt "..." --models runs/models --steps prior=25,decoder=50 --guidance decoder=3
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from core.cli import ArgumentParser, int_in
from flows import inference as common
from unclip.errors import SettingsError
from unclip.pipeline import UnclipPipeline, check_prompts
from unclip.settings import DEFAULT_DECODER_BEST_OF


@task(cache_policy=NO_CACHE)
def generate_images(pipe: UnclipPipeline, prompts: list[str], num_images: int, seed: int, steps, guidance, sampler,
                    output_size, best_of: int | None, batch_size: int, decoder_best_of: int | None = None) -> list:
    return pipe.generate(prompts, num_images, seed, steps, guidance, sampler, output_size, best_of, batch_size,
                         decoder_best_of)


@flow(name="unclip-generate", log_prints=True)
def generate_flow(prompts: list[str], num_images: int = 1, seed: int = 0, steps: dict[str, Any] | None = None,
                  guidance: dict[str, Any] | None = None, sampler: Any = None, output_size: int | None = None,
                  best_of: int | None = None, batch_size: int = 8, decoder_best_of: int | None = None,
                  models: str = "registry", ref: str = "champion",
                  versions: dict[str, str] | None = None, device: str | None = None, precision: str = "auto",
                  compile: bool = False, threads: int | None = None, progress: bool = True,
                  out: str = "outputs/generate",
                  experiment: str | None = "unclip-inference") -> tuple[list[str], str | None]:
    """PNGs (with provenance) and a grid in `out`, logged to MLflow `experiment`; returns (paths, run id)."""
    pipe = common.load_pipeline(models, ref, versions, device, precision, compile, threads, progress)
    images = generate_images(pipe, prompts, num_images, seed, steps, guidance, sampler, output_size, best_of,
                             batch_size, decoder_best_of)
    paths = common.save_outputs(images, out, "generate", columns=num_images if len(prompts) > 1 else None)
    params = {"prompts": prompts, "num_images": num_images, "seed": seed,
              **{k: v for k, v in images[0].info["unclip"].items() if k not in ("prompt", "seed", "task")}}
    return paths, common.log_outputs(paths, params, experiment, "generate")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m flows.generate", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("--prompt", action="append", required=True,
                        help="the caption to draw (repeat for several prompts; longer than CLIP's context: truncated "
                             "with a warning)")
    parser.add_argument("--num-images", type=int_in(1, common.MAX_IMAGES), default=1,
                        help="images per prompt (default: 1)")
    parser.add_argument("--best-of", type=int_in(1, common.MAX_BEST_OF), default=None,
                        help="prior candidates per image; the one closest to the caption is kept (default: the "
                             "prior's own, else 2)")
    parser.add_argument("--decoder-best-of", type=int_in(1, common.MAX_BEST_OF), default=None,
                        help="decodes per image; the one the CLIP reads closest to its image embedding is kept "
                             f"(default: the decoder's own, else {DEFAULT_DECODER_BEST_OF} with a CLIP image tower "
                             "and 1 without; 1 is the paper's single decode)")
    parser.add_argument("--batch-size", type=int_in(1, common.MAX_BATCH), default=8, help="images sampled together (default: 8); "
                                                                   "results do not depend on it")
    common.add_sampling_options(parser)
    common.add_model_options(parser)
    common.add_output_options(parser, "outputs/generate")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.runtime import run_flow_cli

    def job():
        prompts = check_prompts(args.prompt)
        if len(prompts) * args.num_images > common.MAX_IMAGES:
            raise SettingsError(f"{len(prompts)} prompts x --num-images {args.num_images} is more than "
                                f"{common.MAX_IMAGES} images; split the run")
        common.preflight(args, sampler=common.stage_sampler(args))
        paths, run_id = generate_flow(
            prompts, args.num_images, args.seed, common.stage_steps(args), common.stage_guidance(args),
            common.stage_sampler(args), args.output_size, args.best_of, args.batch_size, args.decoder_best_of,
            **common.model_params(args), out=args.out, experiment=None if args.no_mlflow else args.experiment)
        common.print_outputs(paths, run_id)
    return run_flow_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
