"""What the inference command lines share: options, checks before any weights load, the Prefect
tasks that load the pipeline and write the outputs, the MLflow logging of the outputs, and the
skeleton of their main(): `run_command(parser, argv, run)`, where `run(args)` checks what is its own,
then calls its flow with `**sampling_params(args), **run_params(args)`.

The work itself is plain Python in the `unclip` package; here it is wrapped as tasks of a flow.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from core.cli import MAX_SEED, ArgumentParser, check_output_dir, int_in, thread_count
from flows.runtime import run_flow_cli
from unclip import sources as model_sources
from unclip.errors import SettingsError
from unclip.loading import inspect_cascade
from unclip.pipeline import UnclipPipeline
from unclip.provenance import save_run
from unclip.settings import DEFAULT_GUIDANCE, GUIDED, SAMPLED, parse_stage_values
from unclip.stages import make_plan

# Upper bounds of the counts the command lines take: far above any useful run, low enough that a slip
# of the keyboard ends in a one-line error instead of an hour of sampling or a MemoryError.
MAX_IMAGES = 1000  # images per prompt, variations, frames, prior draws
MAX_BEST_OF = 64  # candidates per image (prior or decoder)
MAX_BATCH = 1024
MAX_SIDE = 8192  # output side in pixels

MODELS_HELP = ("where the models come from: 'registry' (the MLflow registry, see --ref/--version) or a folder with "
               "subfolders clip/ prior/ decoder/ and optionally upsampler1/ upsampler2/ (default: registry)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--models", default="registry", metavar="registry|DIR", help=MODELS_HELP)
    group.add_argument("--ref", default="champion", help="registry alias (or version number) of every stage "
                                                         "(default: champion)")
    group.add_argument("--version", default=None, metavar="STAGE=REF,...",
                       help="a version or alias for some stages, e.g. prior=3,decoder=challenger "
                            f"(stages: {', '.join(model_sources.STAGES)})")
    group.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1, mps (default: the "
                                                      "machine's accelerator when it has one, else cpu)")
    group.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                       help="bf16: every stage in bf16 weights (faster where the device has bf16 units and the batch "
                            "is not tiny); auto: per stage the faster of the two, timed here (default: fp32)")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the networks (GPUs and long runs; compiling takes minutes on a CPU)")
    group.add_argument("--threads", type=thread_count(), default=None,
                       help="torch CPU threads (default: torch's; on a busy shared CPU, 1 can be much faster)")


def add_sampling_options(parser: argparse.ArgumentParser, steps_flag: str = "--steps", sampler: bool = True) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--seed", type=int_in(0, MAX_SEED), default=0,
                       help="seed of the first image; image k uses seed + k (default: 0)")
    group.add_argument(steps_flag, dest="sample_steps", default=None, metavar="STAGE=N,...",
                       help=f"sampling steps per stage ({', '.join(SAMPLED)}), e.g. prior=25,decoder=50,upsampler1=7 "
                            "(default: the models' own, else prior 25, decoder 25; upsamplers their configured steps)")
    defaults = ",".join(f"{k}={v:g}" for k, v in DEFAULT_GUIDANCE.items())
    group.add_argument("--guidance", default=None, metavar="STAGE=SCALE,...",
                       help=f"classifier-free guidance per stage ({', '.join(GUIDED)}); 1 = unguided (default: the "
                            f"models' own, else {defaults}, for generation; decoder=1 for the inversion-based commands)")
    if sampler:
        group.add_argument("--sampler", default=None, metavar="NAME|STAGE=NAME,...",
                           help="ddim, dpmpp, ddpm or unclip (Karlo's) for every stage, or per stage (the prior has "
                                "no ddpm) (default: the models' own, else ddim; upsamplers their configured sampler)")
    group.add_argument("--output-size", type=int_in(1, MAX_SIDE), default=None,
                       help="side of the output images: the decoder's or an upsampler's (default: the largest)")


def add_output_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--out", default=default_out, help=f"folder for the PNGs and the grid (default: {default_out})")
    group.add_argument("--experiment", default="unclip-inference",
                       help="MLflow experiment the outputs are logged to (default: unclip-inference)")
    group.add_argument("--no-mlflow", action="store_true", help="do not log the outputs to MLflow")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def command_parser(prog: str, doc: str, out: str, steps_flag: str = "--steps",
                   sampler: bool = False) -> ArgumentParser:
    """An inference command's parser, its docstring's examples as the epilog, with the option groups every
    command shares (sampling, models, output); the command adds its own options."""
    parser = ArgumentParser(prog=prog, description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sampling_options(parser, steps_flag, sampler)
    add_model_options(parser)
    add_output_options(parser, out)
    return parser


def versions_of(text: str | None) -> dict[str, str]:
    return parse_stage_values(text, model_sources.STAGES, "version")


def resolve_sources(models: str, ref: str = "champion", versions: Mapping[str, str] | None = None):
    if models == "registry":
        return model_sources.from_registry(ref, versions)
    if versions:
        raise SettingsError("--version picks registry versions; it cannot be used with --models DIR")
    return model_sources.from_models_dir(models)


def preflight(args: argparse.Namespace, guidance_defaults: Mapping[str, float] | None = None,
              sampler: str | None = None, images: bool = False) -> dict:
    """Every check that needs no weights: the output folder, the device, model folders/registry, CLIP
    identities, sizes and steps; `images`: the command embeds images, which needs a CLIP with an image tower."""
    from core.devices import check_device

    check_output_dir(args.out)
    check_device(args.device)
    found = resolve_sources(args.models, args.ref, versions_of(args.version))
    info = inspect_cascade(found)
    if images and not info.spec.has_image_tower:
        raise SettingsError("the CLIP of these models has no image tower (a Karlo text encoder converted without "
                            "--image-encoder), so it cannot embed the input images; convert again with "
                            "`python -m unclip.convert from-diffusers ... --image-encoder DIR`")
    return make_plan(info, stage_steps(args), stage_guidance(args), sampler or getattr(args, "sampler", None),
                     args.output_size, guidance_defaults)


def stage_steps(args: argparse.Namespace) -> dict[str, str]:
    return parse_stage_values(args.sample_steps, SAMPLED, "steps")


def stage_guidance(args: argparse.Namespace) -> dict[str, str]:
    return parse_stage_values(args.guidance, GUIDED, "guidance")


def stage_sampler(args: argparse.Namespace) -> str | dict[str, str] | None:
    text = getattr(args, "sampler", None)
    return text if not text or "=" not in text else parse_stage_values(text, SAMPLED, "sampler")


def sampling_params(args: argparse.Namespace) -> dict[str, Any]:
    """The flows' sampling parameters from the options of add_sampling_options (less --sampler)."""
    return {"seed": args.seed, "steps": stage_steps(args), "guidance": stage_guidance(args),
            "output_size": args.output_size}


def run_params(args: argparse.Namespace) -> dict[str, Any]:
    """The flows' parameters for where the models come from and where the outputs go."""
    return {"models": args.models, "ref": args.ref, "versions": versions_of(args.version),
            "device": args.device, "precision": args.precision, "compile": args.compile,
            "threads": args.threads, "progress": not args.quiet,
            "out": args.out, "experiment": None if args.no_mlflow else args.experiment}


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None,
                run: Callable[[argparse.Namespace], tuple[list[str], str | None]]) -> int:
    """An inference command's main(): the options parsed, then `run(args)` (its checks, then its flow,
    returning the paths and the MLflow run) with one-line errors, and the outputs printed."""
    args = parser.parse_args(argv)

    def job():
        print_outputs(*run(args))
    return run_flow_cli(job)


@task(cache_policy=NO_CACHE)
def load_pipeline(models: str, ref: str = "champion", versions: Mapping[str, str] | None = None,
                  device: str | None = None, precision: str = "fp32", compile: bool = False,
                  threads: int | None = None, progress: bool = True) -> UnclipPipeline:
    import torch

    from core.devices import check_device

    if threads is not None:
        if threads < 1:
            raise SettingsError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    device = check_device(device)
    found = resolve_sources(models, ref, versions)
    return UnclipPipeline.from_sources(found, device=device, precision=precision, compile=compile, progress=progress)


@task(cache_policy=NO_CACHE)
def save_outputs(images: Sequence[Any], out: str, stem: str, columns: int | None = None,
                 labels: Sequence[str] | None = None) -> list[str]:
    """Write the PNGs and the grid; returns their paths, grid last."""
    from unclip.provenance import record_of

    shared = {k: v for k, v in record_of(images[0]).items() if k not in ("seed", "prompt", "theta")}
    paths, grid = save_run(images, out, stem, columns, labels, grid_record=shared)
    return [str(p) for p in paths] + [str(grid)]


def log_outputs_to_mlflow(paths: Sequence[str], params: Mapping[str, Any], experiment: str,
                          run_name: str) -> str:
    """One MLflow run holding the images (artifact folder `images/`) and the settings; returns its id."""
    from core import tracking

    with tracking.start_run(experiment, run_name=run_name, tags={"task": run_name}) as tracker:
        tracker.log_params(params)
        for path in paths:
            tracker.log_artifact(path, "images")
        return tracker.run_id


def publish(images: Sequence[Any], out: str, stem: str, params: Mapping[str, Any], experiment: str | None,
            drop: Sequence[str] = (), columns: int | None = None,
            labels: Sequence[str] | None = None) -> tuple[list[str], str | None]:
    """Write the images and their grid, and log them with `params` and the provenance the images share
    (less `drop`, the fields that differ between them); returns (paths, MLflow run id)."""
    paths = save_outputs(images, out, stem, columns=columns, labels=labels)
    shared = {k: v for k, v in images[0].info["unclip"].items() if k not in ("task", "source", *drop)}
    return paths, log_outputs(paths, {**params, **shared}, experiment, stem)


@task(cache_policy=NO_CACHE)
def log_outputs(paths: Sequence[str], params: Mapping[str, Any], experiment: str | None, run_name: str) -> str | None:
    lines = "\n".join(f"- `{p}`" for p in paths)
    run_id = log_outputs_to_mlflow(paths, params, experiment, run_name) if experiment else None
    create_markdown_artifact(key=f"unclip-{run_name}".replace("_", "-"),
                             markdown=f"### {run_name}\n\nMLflow run `{run_id or '-'}`\n\n{lines}\n",
                             description=f"{run_name} outputs")
    return run_id


def print_outputs(paths: Sequence[str], run_id: str | None) -> None:
    for path in paths[:-1]:
        print(path)
    print(f"grid: {paths[-1]}")
    if run_id:
        print(f"mlflow run: {run_id}")

