"""Command line of unclip.convert (see its package docstring)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unclip.errors import SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m unclip.convert",
                                     description="convert between diffusers' UnCLIPPipeline (Karlo) and unclip models")
    commands = parser.add_subparsers(dest="command", required=True)
    source = commands.add_parser("from-diffusers", help="an UnCLIPPipeline folder -> MODELS/{clip,prior,decoder,upsampler1}")
    source.add_argument("folder", help="a diffusers UnCLIPPipeline folder (e.g. kakaobrain/karlo-v1-alpha, downloaded)")
    source.add_argument("--out", required=True, help="the models folder to write (must not exist or be empty)")
    source.add_argument("--image-encoder", default=None, metavar="DIR",
                        help="a CLIPVisionModelWithProjection folder, or a pipeline folder with image_encoder/ "
                             "(kakaobrain/karlo-v1-alpha-image-variations): the CLIP gets its image tower, for "
                             "variations, interpolations, text diffs and fine-tuning (default: FOLDER/image_encoder "
                             "where to-diffusers wrote one)")
    source.add_argument("--register", action="store_true",
                        help="also register every stage in the MLflow registry (unclip-clip, unclip-prior, ...)")
    target = commands.add_parser("to-diffusers", help="MODELS -> a diffusers UnCLIPPipeline folder")
    target.add_argument("models", help="a models folder with clip/ prior/ decoder/ upsampler1/")
    target.add_argument("--out", required=True, help="the pipeline folder to write (must not exist or be empty)")
    return parser


def check_out(out: str) -> None:
    path = Path(out).expanduser()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SettingsError(f"--out {out} exists and is not an empty folder; choose another")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core.cli import run_cli

    def job():
        check_out(args.out)
        start = time.perf_counter()
        if args.command == "to-diffusers":
            from unclip.convert.to_diffusers import convert_to_diffusers

            print(f"diffusers UnCLIPPipeline written to {convert_to_diffusers(args.models, args.out)} "
                  f"in {time.perf_counter() - start:.1f}s")
            return
        from unclip.convert.from_diffusers import convert_from_diffusers

        folders = convert_from_diffusers(args.folder, args.out, args.image_encoder)
        print(f"models written to {args.out} in {time.perf_counter() - start:.1f}s: {', '.join(folders)}")
        if args.register:
            from unclip.convert.register import register_converted

            for stage, decision in register_converted(folders, str(Path(args.folder).resolve())).items():
                alias = "champion" if decision.promoted else "challenger"
                print(f"  {stage}: {decision.name} version {decision.version} ({alias})")
    return run_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
