"""Prefect flows that train the cascade, one flow per stage and `train_cascade` for all of them.

    python -m flows.train --preset demo                           # whole cascade, resumes where it stopped
    python -m flows.train --preset demo --data folder:/data/pets  # on your own images (captions.tsv, ...)
    python -m flows.train --preset demo --clip hf:/models/clip    # a frozen pretrained CLIP, not trained here
    python -m flows.train --preset demo --stage prior             # one stage (earlier ones must be registered)
    python -m flows.train --preset smoke --set prior.train.steps=50
    python -m flows.train --preset demo --stage decoder --init-from decoder=models:/unclip-decoder@champion
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from clip.shards import EmbeddingShards
from clip.spec import ClipSpec
from core import registry
from core.cli import ArgumentParser, check_output_dir
from core.config import Config
from core.devices import default_device
from core.threads import drop_share, follow_share, post_share
from data.config import DatasetConfig
from flows.init_from import Parent, check_init_from, parse_init_from
from flows.presets import CASCADE_PRESETS, CascadeSettings, cascade_settings
from flows.stage import StageResult, run_stage, stage_folder

STAGES = ("clip", "prior", "decoder", "upsampler1", "upsampler2")
T = TypeVar("T")
MODEL_NAMES = {"clip": "unclip-clip", "prior": "unclip-prior", "decoder": "unclip-decoder",
               "upsampler1": "unclip-upsampler-1", "upsampler2": "unclip-upsampler-2"}
# The metric each stage's registry gate compares (higher is better); every dataset has it.
GATES = {"clip": "retrieval_top1", "prior": "cos_pred_image", "decoder": "clip_score", "upsampler1": "psnr",
         "upsampler2": "psnr"}


def _publish(result: StageResult) -> StageResult:
    create_markdown_artifact(key=f"unclip-{result.stage}".replace("_", "-"), markdown=result.markdown(),
                             description=f"{result.stage} metrics")
    return result


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def fetch_clip_spec(ref: str = registry.CHAMPION) -> ClipSpec:
    return ClipSpec.load(registry.download_model(MODEL_NAMES["clip"], ref), own_files=True)


@flow(name="train-clip", log_prints=True)
def train_clip_flow(settings: CascadeSettings, workdir: str = "runs", force: bool = False) -> StageResult:
    from clip.train import train_clip

    inputs = {"dataset": _dataset_fingerprint(settings)}

    def train(tracker):
        out = stage_folder(workdir, "clip", settings.clip, inputs)
        spec, metrics = train_clip(settings.clip, out, tracker)
        return out / "model", metrics

    return _publish(run_stage("clip", MODEL_NAMES["clip"], settings.clip, inputs, train,
                              metric=GATES["clip"], force=force))


@flow(name="frozen-clip", log_prints=True)
def frozen_clip_flow(settings: CascadeSettings, clip: str, workdir: str = "runs", force: bool = False) -> StageResult:
    """A pretrained CLIP instead of training one: copied into a model folder of its own, scored on the
    held-out split like a trained one, and registered; a registry reference is used as it is."""
    from clip.pretrained import parse_clip_ref

    ref = parse_clip_ref(clip)
    if ref.registered:
        folder = registry.download_model(ref.name, ref.ref)
        return StageResult("clip", ref.name, str(folder.name), folder, _metrics_of(folder), skipped=True)
    frozen = FrozenClip(spec=ref.spec, data=settings.clip.data, eval_size=settings.clip.eval_size)
    inputs = {"dataset": _dataset_fingerprint(settings)}

    def register(tracker):
        from clip.pretrained import copy_clip

        out = stage_folder(workdir, "clip", frozen, inputs)
        spec = copy_clip(ref.spec, out / "model")
        return out / "model", score_frozen_clip(spec, settings, out)

    return _publish(run_stage("clip", MODEL_NAMES["clip"], frozen, inputs, register, metric=GATES["clip"],
                              force=force))


class FrozenClip(Config):
    """What decides a frozen CLIP's registered version: the CLIP and the data it is scored on."""

    spec: ClipSpec
    data: DatasetConfig
    eval_size: int


def score_frozen_clip(spec: ClipSpec, settings: CascadeSettings, out: Path) -> dict[str, float]:
    from clip.encoder import load_encoder
    from clip.evaluate import evaluate_encoder
    from data import open_dataset
    from data.shards import prepare_images
    from data.skips import skip_metrics

    val = open_dataset(settings.clip.data, "val")
    images = prepare_images(val, spec.image_size, out / "images" / "val", {"dataset": val.fingerprint()},
                            limit=settings.clip.eval_size, desc="prepare val")
    encoder = load_encoder(spec, default_device())
    metrics = evaluate_encoder(encoder, images.head(None, ("images",))["images"], images.captions)
    return {**metrics, **skip_metrics(images.skips)}


@flow(name="embed", log_prints=True)
def embed_flow(settings: CascadeSettings, spec: ClipSpec, workdir: str = "runs",
               image_size: int | None = None) -> dict[str, str]:
    """Shards of both splits for this CLIP (resumable; reused when already complete), embedded on the
    machine's accelerator when it has one, with images at `image_size` (default: the preset decoder's)."""
    from clip.embed import embed_dataset

    folders = {}
    for split in ("train", "val"):
        out = Path(workdir) / "shards" / spec.fingerprint() / _dataset_fingerprint(settings, split) / split
        embed_dataset(spec, settings.clip.data, split, out, image_size=image_size or settings.embed_image_size,
                      device=default_device(), batch_size=settings.embed_batch_size)
        folders[split] = str(out)
    return folders


@flow(name="train-prior", log_prints=True)
def train_prior_flow(settings: CascadeSettings, shards: dict[str, str], workdir: str = "runs",
                     force: bool = False, parent: Parent | None = None) -> StageResult:
    from prior.train import train_prior

    inputs = _shard_inputs(shards) | (parent.inputs() if parent else {})

    def train(tracker):
        return train_prior(settings.prior, shards["train"], stage_folder(workdir, "prior", settings.prior, inputs),
                           tracker=tracker, val_shards_dir=shards["val"], init_from=parent and parent.folder)

    return _publish(run_stage("prior", MODEL_NAMES["prior"], settings.prior, inputs, train,
                              metric=GATES["prior"], force=force))


@flow(name="train-decoder", log_prints=True)
def train_decoder_flow(settings: CascadeSettings, shards: dict[str, str], workdir: str = "runs",
                       force: bool = False, parent: Parent | None = None) -> StageResult:
    from decoder.train import train_decoder

    inputs = _shard_inputs(shards) | (parent.inputs() if parent else {})

    def train(tracker):
        out = stage_folder(workdir, "decoder", settings.decoder, inputs)
        _, metrics = train_decoder(settings.decoder, shards["train"], out, tracker=tracker, val_shards_dir=shards["val"],
                                   init_from=parent and parent.folder)
        return out / "model", metrics

    return _publish(run_stage("decoder", MODEL_NAMES["decoder"], settings.decoder, inputs, train,
                              metric=GATES["decoder"], force=force))


@flow(name="train-upsampler", log_prints=True)
def train_upsampler_flow(settings: CascadeSettings, stage: int, workdir: str = "runs",
                         force: bool = False, parent: Parent | None = None) -> StageResult:
    from upsamplers.train import train_upsampler

    name = f"upsampler{stage}"
    stage_settings = getattr(settings, name)
    inputs = parent.inputs() if parent else {}

    def train(tracker):
        return train_upsampler(stage_settings, stage_folder(workdir, name, stage_settings, inputs), tracker=tracker,
                               init_from=parent and parent.folder)

    return _publish(run_stage(name, MODEL_NAMES[name], stage_settings, inputs, train, metric=GATES[name],
                              force=force))


@task(cache_policy=NO_CACHE)
def register_pipeline() -> str | None:
    """The champions as one servable model (`mlflow models serve -m models:/unclip-pipeline@champion`)."""
    from unclip.serving import register_champions

    return register_champions()


@flow(name="train-cascade", log_prints=True)
def train_cascade(preset: str = "demo", overrides: list[str] | None = None, workdir: str = "runs",
                  stages: list[str] | None = None, force: bool = False, data: str | None = None,
                  clip: str | None = None, init_from: list[str] | None = None) -> dict[str, StageResult]:
    """Train every stage; stages whose inputs are unchanged and already registered are skipped.
    `data` chooses the images of every stage (`folder:/path`, `webdataset:...`, `shapes`); `clip`, a
    pretrained CLIP to use frozen instead of training one (see clip/pretrained.py); `init_from`
    (flows/init_from.py), existing weights some stages start from instead of from scratch.
    CLIP (beside the upsamplers with `settings.upsamplers_beside_clip`) and the embedding come first;
    then `settings.lanes` of the other stages train at once."""
    settings = cascade_settings(preset, overrides or [], data)
    wanted = stages or list(STAGES)
    parents = parse_init_from(init_from or [])
    # The stages that need nothing but the shards, longest first on the demo preset, so that with 2 lanes
    # the decoder trains in one while the other takes the rest in turn. The upsamplers need no CLIP at all.
    later = {
        "decoder": lambda: train_decoder_flow(settings, shards, workdir, force, parents.get("decoder")),
        "upsampler2": lambda: train_upsampler_flow(settings, 2, workdir, force, parents.get("upsampler2")),
        "prior": lambda: train_prior_flow(settings, shards, workdir, force, parents.get("prior")),
        "upsampler1": lambda: train_upsampler_flow(settings, 1, workdir, force, parents.get("upsampler1")),
    }
    later = {name: job for name, job in later.items() if name in wanted}
    clip_job = (lambda: frozen_clip_flow(settings, clip, workdir, force)) if clip else (
        lambda: train_clip_flow(settings, workdir, force))
    first = {"clip": clip_job} if "clip" in wanted or clip else {}
    if first and settings.upsamplers_beside_clip:
        first.update({name: later.pop(name) for name in ("upsampler2", "upsampler1") if name in later})
    results: dict[str, StageResult] = run_lanes(first, 2)  # one lane when the CLIP is alone
    shards = {}
    if {"prior", "decoder"} & set(wanted):
        spec = ClipSpec.load(results["clip"].folder, own_files=True) if "clip" in results else fetch_clip_spec()
        shards = embed_flow(settings, spec, workdir, _decoder_size(parents.get("decoder")))
    results.update(run_lanes(later, settings.lanes))
    results = {name: results[name] for name in STAGES if name in results}
    pipeline = register_pipeline()
    served = f"\n`unclip-pipeline` version {pipeline}\n" if pipeline else ""
    create_markdown_artifact(key="unclip-cascade", markdown="\n".join(r.markdown() for r in results.values()) + served,
                             description=f"cascade {preset}")
    return results


def summary_line(result: StageResult) -> str:
    """`stage: model vN (state) gate-metric value, skipped and converted counts`."""
    state = "skipped: inputs unchanged" if result.skipped else ("champion" if result.promoted else "challenger")
    gate = GATES.get(result.stage)
    parts = [f"{result.stage}: {result.model_name} v{result.version} ({state})"]
    if gate in result.metrics:
        parts.append(f"{gate} {result.metrics[gate]:.4f}")
    for kind in ("skipped", "converted"):
        counts = {k.removeprefix(f"data.{kind}."): int(v) for k, v in result.metrics.items()
                  if k.startswith(f"data.{kind}.")}
        if counts:
            parts.append(f"{kind} data: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "; ".join(parts)


def run_lanes(jobs: dict[str, Callable[[], T]], lanes: int) -> dict[str, T]:
    """Run the jobs in order, `lanes` at a time, each in a thread with its share of torch's CPU threads
    (and a copy of the caller's context, so their Prefect flows nest under the caller's). Once no job
    is left to start, the threads of a lane that ends go to the lanes still running (core/threads.py).
    After a failure no further job starts; the first failure is raised once the running ones end."""
    lanes = min(lanes, len(jobs))
    if lanes <= 1:
        return {name: job() for name, job in jobs.items()}
    total = torch.get_num_threads()
    failed = threading.Event()
    lock = threading.Lock()
    waiting, running = len(jobs), set()

    def run(job: Callable[[], T]) -> T:
        nonlocal waiting
        me = threading.get_ident()
        with lock:
            waiting -= 1
            running.add(me)
            post_share(max(1, total // lanes))
        try:
            if failed.is_set():
                raise CancelledError
            follow_share()  # OpenMP keeps a thread count per calling thread
            return job()
        except BaseException:
            failed.set()
            raise
        finally:
            with lock:
                running.discard(me)
                drop_share()
                if not waiting:
                    for other in running:
                        post_share(max(1, total // len(running)), other)

    try:
        with ThreadPoolExecutor(lanes, thread_name_prefix="unclip-lane") as pool:
            futures = {name: pool.submit(contextvars.copy_context().run, run, job) for name, job in jobs.items()}
    finally:
        torch.set_num_threads(total)  # MKL's count is process-wide: give the caller its threads back
    errors = [e for e in (f.exception() for f in futures.values()) if not isinstance(e, CancelledError | None)]
    if errors:
        raise errors[0]
    return {name: future.result() for name, future in futures.items()}


def _decoder_size(parent: Parent | None) -> int | None:
    """The image side the shards need for a fine-tuned decoder: its own, not the preset's."""
    if parent is None:
        return None
    from core.model_folder import read_model_config
    from decoder.io import DECODER

    return read_model_config(parent.folder, DECODER).image_size


def _dataset_fingerprint(settings: CascadeSettings, split: str = "train") -> str:
    from data import open_dataset

    return open_dataset(settings.clip.data, split).fingerprint()


def _metrics_of(folder: Path) -> dict[str, float]:
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _shard_inputs(shards: dict[str, str]) -> dict[str, str]:
    return {split: EmbeddingShards.open(folder).fingerprint() for split, folder in shards.items()}


def check_before_training(preset: str, overrides: list[str], data: str | None, clip: str | None,
                          workdir: str) -> CascadeSettings:
    """Every mistake that needs no training, before Prefect starts: settings, the data's path, the
    pretrained CLIP's files, a work folder that cannot be written."""
    from clip.pretrained import parse_clip_ref

    settings = cascade_settings(preset, overrides, data)
    if settings.clip.data.path is not None:
        settings.clip.data.existing_path()
    if clip is not None:
        parse_clip_ref(clip)
    check_output_dir(workdir, "--workdir")
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo", choices=CASCADE_PRESETS)
    parser.add_argument("--data", default=None, metavar="SOURCE[:PATH]",
                        help="the images every stage reads: emoji or shapes (built in), folder:/path (images with captions.tsv, "
                             "captions.jsonl or .txt sidecars), webdataset:/shards/{0000..0099}.tar (default: the "
                             "preset's); the same as --set data.source=... --set data.path=...")
    parser.add_argument("--clip", default=None, metavar="SPEC",
                        help="use this pretrained CLIP frozen instead of training one: hf:FOLDER, "
                             "open_clip:MODEL[:WEIGHTS], a CLIP model folder, or models:/unclip-clip@champion")
    parser.add_argument("--stage", action="append", choices=STAGES, help="train only these stages (repeatable)")
    parser.add_argument("--workdir", default="runs", help="where checkpoints, shards and model folders go")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. prior.train.steps=500 (repeatable)")
    parser.add_argument("--force", action="store_true", help="retrain even when inputs are unchanged")
    parser.add_argument("--init-from", action="append", default=[], metavar="[STAGE=]REF",
                        help="start a stage from existing weights instead of from scratch: models:/NAME@ALIAS, "
                             "models:/NAME/VERSION or a model folder, e.g. decoder=models:/unclip-decoder@champion "
                             "or decoder=MODELS/decoder; a models folder alone starts every stage it holds "
                             "(repeatable; see flows/init_from.py)")
    args = parser.parse_args(argv)
    from flows.runtime import run_flow_cli

    def job():
        check_before_training(args.preset, args.overrides, args.data, args.clip, args.workdir)
        check_init_from(args.init_from, args.clip, args.stage)  # and every bad --init-from reference
        results = train_cascade(args.preset, args.overrides, args.workdir, args.stage, args.force, args.data,
                                args.clip, args.init_from)
        for r in results.values():
            print(summary_line(r))
    return run_flow_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
