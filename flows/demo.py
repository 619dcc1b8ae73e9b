"""The one-command demo: train the cascade on the built-in data, then draw and score images with it.

    python -m flows.demo --preset demo                 # what `make demo` runs: the emoji artworks
    python -m flows.demo --preset demo --data shapes   # `make demo-shapes`: the controlled benchmark
    python -m flows.demo --preset smoke                # the same path in a few minutes

It draws held-out captions (never trained on) and training captions at the first upsampler's
resolution and scores both against the real images of the same captions (CLIP score, caption
retrieval, KID; the shapes readings on shapes), read by a judge CLIP trained apart from the cascade's.
It writes contact sheets of generated beside real (held-out ones at the full resolution) and runs a
variation, an interpolation and a text diff. Everything goes to `outputs/`.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from core.cli import ArgumentParser, check_output_dir, int_in
from flows.generate import generate_flow
from flows.interpolate import interpolate_flow
from flows.presets import CASCADE_PRESETS, CascadeSettings
from flows.text_diff import text_diff_flow
from flows.train import train_cascade
from flows.variations import variations_flow

# The text diff each built-in dataset shows: (from, to) in a caption.
EDITS = {"emoji": ("light skin tone", "dark skin tone"), "shapes": None}
JUDGE_SEED = 1000  # the judge CLIP's seed, after the cascade CLIP's
# The cascade CLIP's own reading, reported beside the judge's: the gap is how far the images are tuned to it.
OWN_SHOWN = ("clip_score", "clip_score_real", "caption_top5", "caption_real_top5")


def final_data(settings: CascadeSettings):
    """The dataset as the CLIP trained on it, its pictures at the cascade's full resolution."""
    return settings.clip.data.override(image_size=settings.upsampler2.upsampler.high_res)


def pick_examples(settings: CascadeSettings, split: str, count: int, seed: int = 0) -> list:
    """`count` examples of a split (a fixed sample), their pictures at the full resolution."""
    from data import open_dataset

    dataset = open_dataset(final_data(settings), split)
    if hasattr(dataset, "__len__"):
        order = sorted(range(len(dataset)), key=lambda i: random.Random(f"{seed}/{i}").random())
        picked = (dataset[i] for i in order)
    else:
        picked = iter(dataset)
    out = []
    for example in picked:
        if example is not None:
            out.append(example)
        if len(out) == count:
            break
    return out


def split_captions(settings: CascadeSettings, split: str, limit: int = 1000) -> list[str]:
    """Up to `limit` distinct captions of a split."""
    from data import open_dataset

    dataset = open_dataset(settings.clip.data, split)
    if hasattr(dataset, "caption"):
        captions = (dataset.caption(i) for i in range(len(dataset)))
    else:
        captions = (e.caption for e in dataset)
    unique: dict[str, None] = {}
    for caption in captions:
        unique.setdefault(caption)
        if len(unique) == limit:
            break
    return list(unique)


def caption_pool(captions: list[str], examples: list, size: int) -> list[str]:
    """The captions retrieval ranks among: `size` of `captions`, the examples' own included."""
    own = list(dict.fromkeys(e.caption for e in examples))
    rest = [c for c in captions if c not in set(own)]
    random.Random(0).shuffle(rest)
    return own + rest[:max(0, size - len(own))]


@task(cache_policy=NO_CACHE)
def judge_clip(settings: CascadeSettings, workdir: str):
    """A second CLIP that only scores: trained like the cascade's, on the same training split, from
    another seed. The cascade's own CLIP is a biased judge: the decoder learns to invert its embeddings
    and best-of keeps the decode it reads closest, so it reads noisy scribbles as their caption, higher
    than the real pictures. Reused from `workdir` when trained already."""
    from clip.spec import SPEC_FILE, ClipSpec
    from clip.train import train_clip
    from flows.stage import stage_folder
    from flows.train import _dataset_fingerprint

    clip = settings.clip
    judge = clip.override(train=clip.train.override(seed=clip.train.seed + JUDGE_SEED))
    out = stage_folder(workdir, "judge", judge, {"dataset": _dataset_fingerprint(settings)})
    if (out / "model" / SPEC_FILE).is_file():
        return ClipSpec.load(out / "model", own_files=True)
    return train_clip(judge, out)[0]


def judged_metrics(images: list, examples: list, pool: list[str], judge, own) -> dict[str, float]:
    """The generic figures of the generated images beside the real ones (unclip.evaluate), read by the
    `judge` encoder; the cascade's `own` encoder's reading of the same beside them, under `cascade_clip.`."""
    from unclip.evaluate import image_metrics

    captions, real = [e.caption for e in examples], [e.image for e in examples]
    figures = image_metrics(images, captions, judge, pool, real)
    mine = image_metrics(images, captions, own, pool, real)
    return {**figures, **{f"cascade_clip.{k}": mine[k] for k in OWN_SHOWN if k in mine}}


@task(cache_policy=NO_CACHE)
def score(paths: list[str], examples: list, pool: list[str], judge) -> dict[str, float]:
    """judged_metrics with the `judge` CLIP (a ClipSpec) and the registered cascade CLIP."""
    from clip.encoder import load_encoder
    from unclip.evaluate import champion_encoder

    return judged_metrics(paths, examples, pool, load_encoder(judge), champion_encoder())


@task(cache_policy=NO_CACHE)
def write_sheet(paths: list[str], examples: list, out: Path, name: str) -> str:
    """Generated beside real, one pair per caption, at the generated images' size; logged to MLflow."""
    from PIL import Image

    from core import tracking
    from unclip.provenance import pair_sheet, save_png

    generated = [Image.open(p).convert("RGB") for p in paths]
    sheet = pair_sheet(generated, [e.image for e in examples], [e.caption for e in examples])
    path = save_png(sheet, out / f"{name}.png", {"task": "contact_sheet", "left": "generated", "right": "real"})
    with tracking.start_run("unclip-demo", run_name=name) as tracker:
        tracker.log_artifact(path, "contact_sheets")
    return str(path)


def edit_of(source: str, examples: list) -> tuple[object, str, str] | None:
    """(example, from caption, to caption) for the text diff: the dataset's own edit where one fits."""
    edit = EDITS.get(source)
    if source == "shapes":
        from data.shapes import canonical_caption, parse_caption

        for example in examples:
            attrs = parse_caption(example.caption)
            if attrs is not None:
                colour = next(c for c in ("blue", "red", "yellow") if c not in (attrs.color, attrs.background))
                return example, example.caption, canonical_caption(attrs.replace(color=colour))
    if edit is None:
        return None
    for example in examples:
        words = f" {example.caption} "
        if f" {edit[0]} " in words and f"-{edit[0]}" not in words:
            return example, example.caption, example.caption.replace(edit[0], edit[1])
    return None


@flow(name="unclip-demo", log_prints=True)
def demo_flow(preset: str = "demo", workdir: str = "runs", out: str = "outputs", prompts: int = 32,
              overrides: list[str] | None = None, data: str | None = None, score_prompts: int = 100) -> dict:
    from core.errors import ConfigError
    from flows.presets import cascade_settings

    if prompts < 2 or score_prompts < 2:
        raise ConfigError(f"the demo needs at least 2 prompts (an interpolation joins two images) and 2 scored ones, "
                          f"got {prompts} and {score_prompts}")
    settings = cascade_settings(preset, overrides or [], data)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    results = train_cascade(preset, overrides or [], workdir, data=data)
    timings["train"] = time.perf_counter() - start
    out_dir = Path(out)
    t = time.perf_counter()
    judge = judge_clip(settings, workdir)
    timings["judge"] = time.perf_counter() - t
    t = time.perf_counter()
    count = max(prompts, score_prompts)
    held, seen = pick_examples(settings, "val", count), pick_examples(settings, "train", count)
    scored_held, scored_seen, sheet = held[:score_prompts], seen[:score_prompts], min(prompts, score_prompts)
    scored_size = settings.upsampler1.upsampler.high_res  # the scored images stop at the first upsampler
    full_paths, _ = generate_flow([e.caption for e in held[:prompts]], out=f"{out}/heldout", progress=False)
    val_paths, _ = generate_flow([e.caption for e in scored_held], output_size=scored_size,
                                 out=f"{out}/heldout_scored", progress=False)
    train_paths, _ = generate_flow([e.caption for e in scored_seen], output_size=scored_size,
                                   out=f"{out}/train_captions", progress=False)
    timings["generate"] = time.perf_counter() - t
    t = time.perf_counter()
    held_out = split_captions(settings, "val")  # retrieval ranks among all of them (as many for training ones)
    train_pool = caption_pool(split_captions(settings, "train"), scored_seen, len(held_out))
    figures = {"heldout": score(val_paths[:-1], scored_held, caption_pool(held_out, scored_held, len(held_out)), judge),
               "train_captions": score(train_paths[:-1], scored_seen, train_pool, judge)}
    sheets = {"heldout": write_sheet(full_paths[:-1], held[:prompts], out_dir, "contact_sheet_heldout"),
              "train_captions": write_sheet(train_paths[:sheet], seen[:sheet], out_dir, "contact_sheet_train")}
    timings["score"] = time.perf_counter() - t
    t = time.perf_counter()
    grids = manipulations(settings, held + seen, train_paths, out)
    timings["manipulations"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    summary = {
        "preset": preset, "data": settings.data_source,
        "models": {k: f"{r.model_name} v{r.version}" + (" (reused)" if r.skipped else "") for k, r in results.items()},
        "stage_metrics": {k: r.metrics for k, r in results.items()},
        "generated": figures, "contact_sheets": sheets, "judge_clip": judge.fingerprint(),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        # each stage's training, evaluation and registration; the rest of "train" is the embedding step
        "stage_seconds": {k: round(r.seconds, 1) for k, r in results.items()},
        "grids": {"heldout": full_paths[-1], "train_captions": train_paths[-1], **grids},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def manipulations(settings: CascadeSettings, examples: list, train_paths: list[str], out: str) -> dict[str, str]:
    """A variation and an interpolation of generated images, and the dataset's text diff of a real one."""
    size = settings.upsampler1.upsampler.high_res
    grids = {}
    paths, _ = variations_flow(train_paths[0], num_images=4, output_size=size, out=f"{out}/variations", progress=False)
    grids["variations"] = paths[-1]
    paths, _ = interpolate_flow(train_paths[0], train_paths[1], frames=5, output_size=size, out=f"{out}/interpolate",
                                progress=False)
    grids["interpolate"] = paths[-1]
    edit = edit_of(settings.data_source, examples)
    if edit is not None:
        example, before, after = edit
        source = Path(out) / "text_diff_source.png"
        source.parent.mkdir(parents=True, exist_ok=True)
        example.image.save(source)
        paths, _ = text_diff_flow(str(source), before, after, output_size=size, out=f"{out}/text_diff", progress=False)
        grids["text_diff"] = paths[-1]
    return grids


def report(summary: dict, out: str) -> None:
    from core import tracking

    print(f"\nunclip demo finished ({summary['data']} data)")
    for stage, model in summary["models"].items():
        print(f"  {stage:<11} {model}")
    for name, figures in summary["generated"].items():
        keys = ("clip_score", "clip_score_real", "caption_top5", "caption_real_top5", "kid", "kid_real_split")
        print(f"  {name} (judge CLIP): " + ", ".join(f"{k} {figures[k]:.3g}" for k in keys if k in figures))
        print(f"  {name} (the cascade's own CLIP): " + ", ".join(
            f"{k} {figures['cascade_clip.' + k]:.3g}" for k in OWN_SHOWN if "cascade_clip." + k in figures))
    print("  time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in summary["timings_s"].items()))
    print("  training, per stage: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in summary["stage_seconds"].items()))
    print(f"\nimages:   {Path(out).resolve()}")
    print("contact sheets (generated | real): " + ", ".join(summary["contact_sheets"].values()))
    print(f"summary:  {Path(out).resolve() / 'demo_summary.json'}")
    print(f"MLflow:   {tracking.tracking_uri()}\n          open the UI with: .venv/bin/mlflow ui --backend-store-uri "
          f"{tracking.tracking_uri()}")
    print("Prefect:  runs used a temporary local server; to keep and browse them, start "
          "`.venv/bin/prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api before `make demo`")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo", choices=CASCADE_PRESETS)
    parser.add_argument("--data", default=None, metavar="SOURCE[:PATH]",
                        help="emoji (the demo's default), shapes, folder:/path or webdataset:/shards/... (see flows.train)")
    parser.add_argument("--workdir", default="runs", help="checkpoints, shards and model folders (default: runs)")
    parser.add_argument("--out", default="outputs", help="where the images go (default: outputs)")
    parser.add_argument("--prompts", type=int_in(2, 1000), default=32, help="captions in each contact sheet, "
                        "the held-out ones drawn at the full resolution; at least 2 (an interpolation joins two "
                        "images) (default: 32)")
    parser.add_argument("--score-prompts", type=int_in(2, 1000), default=100, help="held-out and training captions "
                        "drawn at the first upsampler's resolution and scored (default: 100)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training setting, e.g. prior.train.steps=500 (repeatable)")
    args = parser.parse_args(argv)
    from flows.runtime import run_flow_cli

    def job():
        from flows.presets import cascade_settings

        # settings mistakes and unwritable folders before Prefect starts
        cascade_settings(args.preset, args.overrides, args.data)
        check_output_dir(args.workdir, "--workdir")
        check_output_dir(args.out)
        report(demo_flow(args.preset, args.workdir, args.out, args.prompts, args.overrides, args.data,
                          args.score_prompts), args.out)
    return run_flow_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
