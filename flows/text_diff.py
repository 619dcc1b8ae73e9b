"""Text diffs: move an image's CLIP embedding towards the difference of two captions' text
embeddings (z_θ = slerp(z_i, normalise(z_t(to) − z_t(from)), θ)), or by the difference of the
prior's image embeddings of the two captions (--direction prior), decoding every frame from the
image's DDIM inversion, as a Prefect flow logged to MLflow.

    python -m flows.text_diff --image red.png --from "a red circle ..." --to "a blue circle ..."
    python -m flows.text_diff --image red.png --from "..." --to "..." --direction prior --thetas 0,0.5,1
    python -m flows.text_diff --image red.png --from "..." --to "..." --thetas 0,0.2,0.4 --models runs/models
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from core.cli import ArgumentParser, int_in
from flows import inference as common
from unclip.errors import SettingsError
from unclip.images import load_image
from unclip.manipulate import CAPTION_MODES, DIRECTIONS, THETA_MAX, check_caption
from unclip.pipeline import UnclipPipeline, check_prompts
from unclip.settings import DEFAULT_EDIT_BEST_OF, EDIT_BEST_OF_ETA, MANIPULATION_GUIDANCE


@task(cache_policy=NO_CACHE)
def make_text_diff(pipe: UnclipPipeline, image: str, from_caption: str, to_caption: str, thetas: list[float],
                   seed: int, steps, guidance, output_size, direction: str = "text", draws: int = 8,
                   caption: str = "blend", best_of: int = DEFAULT_EDIT_BEST_OF,
                   best_of_eta: float = EDIT_BEST_OF_ETA) -> list:
    return pipe.text_diff(image, from_caption, to_caption, thetas, direction=direction, caption=caption, draws=draws,
                          best_of=best_of, best_of_eta=best_of_eta, seed=seed, steps=steps, guidance=guidance,
                          output_size=output_size)


@flow(name="unclip-text-diff", log_prints=True)
def text_diff_flow(image: str, from_caption: str, to_caption: str,
                   thetas: list[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), direction: str = "text",
                   draws: int = 8, seed: int = 0, caption: str = "blend", best_of: int = DEFAULT_EDIT_BEST_OF,
                   best_of_eta: float = EDIT_BEST_OF_ETA,
                   steps: dict[str, Any] | None = None, guidance: dict[str, Any] | None = None,
                   output_size: int | None = None, models: str = "registry", ref: str = "champion",
                   versions: dict[str, str] | None = None, device: str | None = None, precision: str = "fp32",
                   compile: bool = False, threads: int | None = None, progress: bool = True,
                   out: str = "outputs/text_diff",
                   experiment: str | None = "unclip-inference") -> tuple[list[str], str | None]:
    pipe = common.load_pipeline(models, ref, versions, device, precision, compile, threads, progress)
    images = make_text_diff(pipe, image, from_caption, to_caption, list(thetas), seed, steps, guidance, output_size,
                            direction, draws, caption, best_of, best_of_eta)
    labels = [f"theta={t:.2f}" for t in thetas]
    paths = common.save_outputs(images, out, "text_diff", columns=len(images), labels=labels)
    params = {"image": image, "thetas": list(thetas),
              **{k: v for k, v in images[0].info["unclip"].items() if k not in ("task", "source", "theta", "candidate")}}
    return paths, common.log_outputs(paths, params, experiment, "text_diff")


def parse_thetas(text: str, direction: str = "text") -> list[float]:
    top = THETA_MAX[direction]
    try:
        thetas = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SettingsError(f"--thetas must be numbers separated by commas, e.g. 0,0.25,0.5; got {text!r}") from None
    if not thetas or any(not 0 <= t <= top for t in thetas):
        raise SettingsError(f"--thetas of the {direction} direction must be values in [0, {top:g}], got {text!r}")
    return thetas


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m flows.text_diff", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--image", required=True, help="the image to edit (PNG, JPEG, ...)")
    parser.add_argument("--from", dest="from_caption", required=True, help="a caption of the image as it is")
    parser.add_argument("--to", dest="to_caption", required=True, help="the caption it should move towards")
    parser.add_argument("--thetas", default="0,0.1,0.2,0.3,0.4,0.5",
                        help="how far to move, one frame each (default: 0,0.1,0.2,0.3,0.4,0.5)")
    parser.add_argument("--direction", choices=DIRECTIONS, default="text",
                        help="text: slerp towards the normalised CLIP text difference, as in the paper (θ up to "
                        "about 0.5); prior: add θ × the difference of the prior's image embeddings of the two "
                        "captions (θ = 1: the whole edit)")
    parser.add_argument("--draws", type=int_in(1, common.MAX_IMAGES), default=8, help="prior draws averaged per caption for --direction prior")
    parser.add_argument("--caption", choices=CAPTION_MODES, default="blend",
                        help="blend: the decoder also reads the captions, moving from --from (θ = 0, the image "
                        "itself) to --to (from θ = 0.5 on, or 1 with --direction prior); on the demo's models it "
                        "kept the shape in more edits (README). none: embeddings only, as in the paper")
    parser.add_argument("--best-of", type=int_in(1, common.MAX_BEST_OF), default=DEFAULT_EDIT_BEST_OF,
                        help="decodes per edited frame: the η = 0 one and the rest with --best-of-eta from the same "
                        "x_T; the one CLIP reads closest to the edited embedding is kept (default: "
                        f"{DEFAULT_EDIT_BEST_OF}; 1: the paper's single decode; θ = 0 always reconstructs)")
    parser.add_argument("--best-of-eta", type=float, default=EDIT_BEST_OF_ETA,
                        help=f"DDIM η of the extra candidates, in (0, 1] (default: {EDIT_BEST_OF_ETA})")
    common.add_sampling_options(parser, sampler=False)
    common.add_model_options(parser)
    common.add_output_options(parser, "outputs/text_diff")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.runtime import run_flow_cli

    def job():
        (from_caption,) = check_prompts([args.from_caption], "--from caption")
        (to_caption,) = check_prompts([args.to_caption], "--to caption")
        thetas = parse_thetas(args.thetas, args.direction)
        if not 0 < args.best_of_eta <= 1:
            raise SettingsError(f"--best-of-eta must lie in (0, 1], got {args.best_of_eta}")
        load_image(args.image)
        check_caption(args.caption, common.preflight(args, MANIPULATION_GUIDANCE, images=True))
        paths, run_id = text_diff_flow(
            str(args.image), from_caption, to_caption, thetas, args.direction, args.draws, args.seed, args.caption,
            args.best_of, args.best_of_eta,
            common.stage_steps(args), common.stage_guidance(args), args.output_size, **common.model_params(args), out=args.out,
            experiment=None if args.no_mlflow else args.experiment)
        common.print_outputs(paths, run_id)
    return run_flow_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
