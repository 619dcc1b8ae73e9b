"""Prefect flows that train the cascade, one flow per stage and `train_cascade` for all of them.

    python -m flows.train --preset demo                  # whole cascade, resumes where it stopped
    python -m flows.train --preset demo --stage prior    # one stage (earlier ones must be registered)
    python -m flows.train --preset smoke --set prior.train.steps=50
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from clip.shards import EmbeddingShards
from clip.spec import ClipSpec
from core import registry
from flows.presets import CASCADE_PRESETS, CascadeSettings, cascade_settings
from flows.stage import StageResult, run_stage, stage_folder

STAGES = ("clip", "prior", "decoder", "upsampler1", "upsampler2")
MODEL_NAMES = {"clip": "unclip-clip", "prior": "unclip-prior", "decoder": "unclip-decoder",
               "upsampler1": "unclip-upsampler-1", "upsampler2": "unclip-upsampler-2"}


def _publish(result: StageResult) -> StageResult:
    create_markdown_artifact(key=f"unclip-{result.stage}".replace("_", "-"), markdown=result.markdown(),
                             description=f"{result.stage} metrics")
    return result


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def fetch_clip_spec(ref: str = registry.CHAMPION) -> ClipSpec:
    return ClipSpec.load(registry.download_model(MODEL_NAMES["clip"], ref))


@flow(name="train-clip", log_prints=True)
def train_clip_flow(settings: CascadeSettings, workdir: str = "runs", force: bool = False) -> StageResult:
    from clip.train import train_clip

    inputs = {"dataset": _dataset_fingerprint(settings)}

    def train(tracker):
        out = stage_folder(workdir, "clip", settings.clip, inputs)
        spec, metrics = train_clip(settings.clip, out, tracker)
        return out / "model", metrics

    return _publish(run_stage("clip", MODEL_NAMES["clip"], settings.clip, inputs, train,
                              metric="zeroshot_min", force=force))


@flow(name="embed", log_prints=True)
def embed_flow(settings: CascadeSettings, spec: ClipSpec, workdir: str = "runs") -> dict[str, str]:
    """Shards of both splits for this CLIP (resumable; reused when already complete)."""
    from clip.embed import embed_dataset

    folders = {}
    for split in ("train", "val"):
        out = Path(workdir) / "shards" / spec.fingerprint() / split
        embed_dataset(spec, settings.clip.data, split, out, image_size=settings.embed_image_size)
        folders[split] = str(out)
    return folders


@flow(name="train-prior", log_prints=True)
def train_prior_flow(settings: CascadeSettings, shards: dict[str, str], workdir: str = "runs",
                     force: bool = False) -> StageResult:
    from prior.train import train_prior

    inputs = _shard_inputs(shards)

    def train(tracker):
        return train_prior(settings.prior, shards["train"], stage_folder(workdir, "prior", settings.prior, inputs),
                           tracker=tracker, val_shards_dir=shards["val"])

    return _publish(run_stage("prior", MODEL_NAMES["prior"], settings.prior, inputs, train,
                              metric=("zeroshot_min", "cos_pred_image"), force=force))


@flow(name="train-decoder", log_prints=True)
def train_decoder_flow(settings: CascadeSettings, shards: dict[str, str], workdir: str = "runs",
                       force: bool = False) -> StageResult:
    from decoder.train import train_decoder

    inputs = _shard_inputs(shards)

    def train(tracker):
        out = stage_folder(workdir, "decoder", settings.decoder, inputs)
        _, metrics = train_decoder(settings.decoder, shards["train"], out, tracker=tracker, val_shards_dir=shards["val"])
        return out / "model", metrics

    return _publish(run_stage("decoder", MODEL_NAMES["decoder"], settings.decoder, inputs, train,
                              metric=("zeroshot_min", "clip_consistency"), force=force))


@flow(name="train-upsampler", log_prints=True)
def train_upsampler_flow(settings: CascadeSettings, stage: int, workdir: str = "runs",
                         force: bool = False) -> StageResult:
    from upsamplers.train import train_upsampler

    name = f"upsampler{stage}"
    stage_settings = getattr(settings, name)

    def train(tracker):
        return train_upsampler(stage_settings, stage_folder(workdir, name, stage_settings, {}), tracker=tracker)

    return _publish(run_stage(name, MODEL_NAMES[name], stage_settings, {}, train, metric="psnr", force=force))


@flow(name="train-cascade", log_prints=True)
def train_cascade(preset: str = "demo", overrides: list[str] | None = None, workdir: str = "runs",
                  stages: list[str] | None = None, force: bool = False) -> dict[str, StageResult]:
    """Train every stage in order; stages whose inputs are unchanged and already registered are skipped."""
    settings = cascade_settings(preset, overrides or [])
    wanted = stages or list(STAGES)
    results: dict[str, StageResult] = {}
    if "clip" in wanted:
        results["clip"] = train_clip_flow(settings, workdir, force)
        spec = ClipSpec.load(results["clip"].folder)
    else:
        spec = fetch_clip_spec()
    if {"prior", "decoder"} & set(wanted):
        shards = embed_flow(settings, spec, workdir)
        if "prior" in wanted:
            results["prior"] = train_prior_flow(settings, shards, workdir, force)
        if "decoder" in wanted:
            results["decoder"] = train_decoder_flow(settings, shards, workdir, force)
    for stage in (1, 2):
        if f"upsampler{stage}" in wanted:
            results[f"upsampler{stage}"] = train_upsampler_flow(settings, stage, workdir, force)
    create_markdown_artifact(key="unclip-cascade", markdown="\n".join(r.markdown() for r in results.values()),
                             description=f"cascade {preset}")
    return results


def _dataset_fingerprint(settings: CascadeSettings) -> str:
    from data import open_dataset

    return open_dataset(settings.clip.data, "train").fingerprint()


def _shard_inputs(shards: dict[str, str]) -> dict[str, str]:
    return {split: EmbeddingShards.open(folder).fingerprint() for split, folder in shards.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo", choices=CASCADE_PRESETS)
    parser.add_argument("--stage", action="append", choices=STAGES, help="train only these stages (repeatable)")
    parser.add_argument("--workdir", default="runs", help="where checkpoints, shards and model folders go")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. prior.train.steps=500 (repeatable)")
    parser.add_argument("--force", action="store_true", help="retrain even when inputs are unchanged")
    args = parser.parse_args(argv)
    from flows.runtime import run_flow_cli

    def job():
        results = train_cascade(args.preset, args.overrides, args.workdir, args.stage, args.force)
        for r in results.values():
            print(f"{r.stage}: {r.model_name} v{r.version} {'(skipped)' if r.skipped else ''}")
    return run_flow_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
