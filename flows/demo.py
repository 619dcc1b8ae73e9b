"""The one-command demo: train the cascade on the built-in shapes data, then make images with it.

    python -m flows.demo --preset demo     # what `make demo` runs
    python -m flows.demo --preset smoke    # the same path in a few minutes
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from core.cli import ArgumentParser, check_output_dir, int_in
from flows.generate import generate_flow
from flows.interpolate import interpolate_flow
from flows.presets import CASCADE_PRESETS
from flows.text_diff import text_diff_flow
from flows.train import train_cascade
from flows.variations import variations_flow


def held_out_prompts(preset: str, count: int) -> list[str]:
    """Canonical captions of the shapes validation stream: never seen in training."""
    from data import open_dataset
    from flows.presets import cascade_settings

    val = open_dataset(cascade_settings(preset).clip.data, "val")
    return [val.caption(i) for i in range(min(count, len(val)))]


def recolour(prompt: str) -> str:
    """The text-diff target: the same caption with another object colour."""
    from data.shapes import canonical_caption, parse_caption

    attrs = parse_caption(prompt)
    colour = "blue" if attrs.color != "blue" and attrs.background != "blue" else "red"
    if attrs.background == colour:
        colour = "yellow"
    return canonical_caption(attrs.replace(color=colour))


@task(cache_policy=NO_CACHE)
def score_images(paths: list[str], prompts: list[str], images_per_prompt: int) -> dict[str, float]:
    """Zero-shot attribute accuracy of the generated images, judged by the project's CLIP."""
    from unclip.evaluate import prompt_accuracy

    return prompt_accuracy(paths, [p for p in prompts for _ in range(images_per_prompt)])


@flow(name="unclip-demo", log_prints=True)
def demo_flow(preset: str = "demo", workdir: str = "runs", out: str = "outputs", prompts: int = 8,
              images_per_prompt: int = 4, overrides: list[str] | None = None) -> dict:
    from core.errors import ConfigError
    from flows.presets import cascade_settings

    if prompts < 2 or images_per_prompt < 1:
        raise ConfigError(f"the demo needs at least 2 prompts (an interpolation joins two of their images) and 1 image "
                          f"per prompt, got {prompts} and {images_per_prompt}")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    results = train_cascade(preset, overrides or [], workdir)
    timings["train"] = time.perf_counter() - start
    # The CLIP judges at its own small resolution, so the scored images and the manipulations stop
    # after the first upsampler; two images go through the whole cascade to show its output (each costs
    # ~5 s in the second upsampler at 512 px on the 2 cores, more than a scored image in all stages before).
    size = cascade_settings(preset, overrides or []).upsampler1.upsampler.high_res
    chosen = held_out_prompts(preset, prompts)
    t = time.perf_counter()
    paths, _ = generate_flow(chosen, num_images=images_per_prompt, output_size=size, out=f"{out}/generate",
                             progress=False)
    full_paths, _ = generate_flow(chosen[:2], num_images=1, out=f"{out}/full_resolution", progress=False)
    timings["generate"] = time.perf_counter() - t
    accuracy = score_images(paths[:-1], chosen, images_per_prompt)
    t = time.perf_counter()
    first, second = paths[0], paths[images_per_prompt]
    var_paths, _ = variations_flow(first, num_images=4, output_size=size, out=f"{out}/variations", progress=False)
    int_paths, _ = interpolate_flow(first, second, frames=5, output_size=size, out=f"{out}/interpolate",
                                    progress=False)
    diff_paths, _ = text_diff_flow(first, chosen[0], recolour(chosen[0]), output_size=size, out=f"{out}/text_diff",
                                   progress=False)
    timings["manipulations"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    summary = {
        "preset": preset,
        "models": {k: f"{r.model_name} v{r.version}" + (" (reused)" if r.skipped else "") for k, r in results.items()},
        "stage_metrics": {k: r.metrics for k, r in results.items()},
        "attribute_accuracy": accuracy,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "grids": {"full_resolution": full_paths[-1], "generate": paths[-1], "variations": var_paths[-1],
                  "interpolate": int_paths[-1], "text_diff": diff_paths[-1]},
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def report(summary: dict, out: str) -> None:
    from core import tracking

    print("\nunclip demo finished")
    for stage, model in summary["models"].items():
        print(f"  {stage:<11} {model}")
    acc = summary["attribute_accuracy"]
    print("  attribute accuracy of the generated images (held-out prompts): "
          + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))
    print("  time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in summary["timings_s"].items()))
    print(f"\nimages:   {Path(out).resolve()}  (grids: " + ", ".join(summary["grids"].values()) + ")")
    print(f"summary:  {Path(out).resolve() / 'demo_summary.json'}")
    print(f"MLflow:   {tracking.tracking_uri()}\n          open the UI with: .venv/bin/mlflow ui --backend-store-uri "
          f"{tracking.tracking_uri()}")
    print("Prefect:  runs used a temporary local server; to keep and browse them, start "
          "`.venv/bin/prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api before `make demo`")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo", choices=CASCADE_PRESETS)
    parser.add_argument("--workdir", default="runs", help="checkpoints, shards and model folders (default: runs)")
    parser.add_argument("--out", default="outputs", help="where the images go (default: outputs)")
    parser.add_argument("--prompts", type=int_in(2, 1000), default=8, help="held-out prompts to draw, at least 2 "
                        "(an interpolation joins two of their images) (default: 8)")
    parser.add_argument("--images-per-prompt", type=int_in(1, 100), default=4, help="images per prompt (default: 4)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training setting, e.g. prior.train.steps=500 (repeatable)")
    args = parser.parse_args(argv)
    from flows.runtime import run_flow_cli

    def job():
        from flows.presets import cascade_settings

        cascade_settings(args.preset, args.overrides)  # settings mistakes and unwritable folders before Prefect starts
        check_output_dir(args.workdir, "--workdir")
        check_output_dir(args.out)
        report(demo_flow(args.preset, args.workdir, args.out, args.prompts, args.images_per_prompt, args.overrides),
               args.out)
    return run_flow_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
