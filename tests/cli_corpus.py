"""A corpus of bad command lines, as a new user might type them, and the files they point at.

`build_fixtures(root)` lays out tiny models (and damaged copies), shards, pictures and a plain file;
`cases(fx)` lists (module, argv, pattern) for every command line: each must end in one `error:` line
matching `pattern`, exit status 2 and no traceback. tests/test_cli_errors.py runs them in-process;
`python tests/cli_corpus.py` runs each as a subprocess (how the figures before the fix were taken).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNWRITABLE = "/proc/unclip-no-such-folder"
BIG = "1000000000"


@dataclass(frozen=True)
class Case:
    module: str
    argv: tuple[str, ...]
    pattern: str  # a regex the error line must match

    @property
    def id(self) -> str:
        return f"{self.module} {' '.join(self.argv)}"[:110]


def build_fixtures(root: Path) -> dict[str, Path]:
    """Tiny models, a truncated and a mismatched copy, shards, pictures; paths by name."""
    sys.path.insert(0, str(ROOT / "tests"))
    from PIL import Image
    from tiny_clips import make_open_clip, make_shape_shards

    from unclip.testing import build_tiny_models

    root.mkdir(parents=True, exist_ok=True)
    models = build_tiny_models(root / "models", make_open_clip)
    truncated = root / "truncated"
    shutil.copytree(models, truncated)
    weights = truncated / "decoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    mismatched = root / "mismatched"
    shutil.copytree(models, mismatched)
    config = (mismatched / "decoder" / "decoder_config.json")
    config.write_text(config.read_text().replace('"channels": 16', '"channels": 32'))
    damaged = root / "damaged_clip"
    shutil.copytree(models / "clip", damaged)
    for weights in damaged.glob("*.safetensors"):
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF  # still readable: only its sha256 tells
        weights.write_bytes(bytes(data))
    picture = root / "red.png"
    Image.new("RGB", (16, 16), (200, 20, 20)).save(picture)
    plain = root / "notes.txt"
    plain.write_text("not a folder")
    from clip.spec import ClipSpec

    shards = root / "shards"
    make_shape_shards(shards, ClipSpec.load(models / "clip"), "train", 8, image_size=16)
    return {"models": models, "truncated": truncated, "mismatched": mismatched, "damaged_clip": damaged,
            "picture": picture,
            "file": plain, "shards": shards, "root": root}


def cases(fx: dict[str, Path], cuda: bool = False) -> list[Case]:
    models, pic, shards, root = str(fx["models"]), str(fx["picture"]), str(fx["shards"]), fx["root"]
    under_file = str(fx["file"] / "sub")
    clip_dir = str(fx["models"] / "clip")
    out = ["--out", str(root / "out"), "--no-mlflow", "--quiet"]
    gen = ["--prompt", "a red circle", "--models", models, *out]
    img = ["--models", models, *out]
    tiny_clip = ["--preset", "smoke", "--set", "data.num_examples=40", "--set", "data.val_size=8",
                 "--set", "eval_size=8", "--set", "train.steps=2", "--set", "train.batch_size=8"]
    cascade = ["--preset", "smoke", "--workdir", str(root / "runs")]
    table = [
        # clip.train
        ("clip.train", [*tiny_clip, "--set", "train.steps=0", "--out", str(root / "c")], "steps"),
        ("clip.train", [*tiny_clip, "--set", "train.lr=1e39", "--out", str(root / "c")], "lr"),
        ("clip.train", [*tiny_clip, "--set", "nonsense=1", "--out", str(root / "c")], "nonsense"),
        ("clip.train", [*tiny_clip, "--out", UNWRITABLE], "cannot (be )?creat|not writable"),
        ("clip.train", [*tiny_clip, "--out", under_file], "not a folder"),
        ("clip.train", [*tiny_clip, "--set", "data.source=folder", "--out", str(root / "c")], "needs a path"),
        ("clip.train", [*tiny_clip, "--set", "data.source=folder", "--set", "data.path=/nonexistent",
                        "--out", str(root / "c")], "not an existing directory"),
        ("clip.train", ["--preset", "nope"], "invalid choice"),
        # clip.embed
        ("clip.embed", ["--clip", clip_dir, "--out", str(root / "e"), "--device", "banana"], "device"),
        ("clip.embed", ["--clip", clip_dir, "--out", str(root / "e"), "--image-size", "-1"], "image.size"),
        ("clip.embed", ["--clip", clip_dir, "--out", str(root / "e"), "--image-size", "100000"], "image.size"),
        ("clip.embed", ["--clip", clip_dir, "--out", str(root / "e"), "--shard-size", "0"], "shard.size"),
        ("clip.embed", ["--clip", clip_dir, "--out", str(root / "e"), "--batch-size", "0"], "batch.size"),
        ("clip.embed", ["--clip", "/nonexistent", "--out", str(root / "e")], "nonexistent"),
        ("clip.embed", ["--clip", clip_dir, "--out", UNWRITABLE], "cannot (be )?creat|not writable"),
        ("clip.embed", ["--clip", clip_dir, "--out", under_file], "not a folder"),
        ("clip.embed", ["--clip", clip_dir, "--out", str(root / "e"), "--set", "source=folder"], "needs a path"),
        ("clip.embed", ["--clip", clip_dir, "--out", str(root / "e"), "--split", "test"], "invalid choice"),
        ("clip.embed", ["--clip", str(fx["damaged_clip"]), "--out", str(root / "nested" / "e"), "--set",
                        "num_examples=40", "--shard-size", "16"], "sha256"),
        # prior.train
        ("prior.train", ["--preset", "smoke", "--shards", "/nonexistent", "--out", str(root / "p")], "nonexistent"),
        ("prior.train", ["--preset", "smoke", "--shards", shards, "--set", "train.lr=1e39",
                         "--out", str(root / "p")], "lr"),
        ("prior.train", ["--preset", "smoke", "--shards", shards, "--out", UNWRITABLE],
         "cannot (be )?creat|not writable"),
        ("prior.train", ["--preset", "smoke", "--shards", shards, "--set", "train.steps=-5",
                         "--out", str(root / "p")], "steps"),
        ("prior.train", ["--preset", "nope", "--shards", shards], "invalid choice"),
        # decoder.train
        ("decoder.train", ["--preset", "smoke", "--shards", shards, "--threads", "0",
                           "--out", str(root / "d")], "threads"),
        ("decoder.train", ["--preset", "nope", "--shards", shards, "--out", str(root / "d")], "preset"),
        ("decoder.train", ["--preset", "smoke", "--shards", "/nonexistent", "--out", str(root / "d")], "nonexistent"),
        ("decoder.train", ["--preset", "smoke", "--shards", shards, "--out", under_file], "not a folder"),
        ("decoder.train", ["--preset", "smoke", "--shards", shards, "--set", "train.lr=1e39",
                           "--out", str(root / "d")], "lr"),
        # upsamplers.train
        ("upsamplers.train", ["--preset", "smoke", "--threads", "-1", "--out", str(root / "u")], "threads"),
        ("upsamplers.train", ["--preset", "smoke", "--stage", "3"], "invalid choice"),
        ("upsamplers.train", ["--preset", "smoke", "--set", "train.lr=1e39", "--out", str(root / "u")], "lr"),
        ("upsamplers.train", ["--preset", "smoke", "--out", UNWRITABLE], "cannot (be )?creat|not writable"),
        ("upsamplers.train", ["--preset", "nope", "--out", str(root / "u")], "preset"),
        # flows.train
        ("flows.train", [*cascade, "--set", "prior.train.steps=-1"], "steps"),
        ("flows.train", [*cascade, "--set", "nonsense.key=1"], "nonsense"),
        ("flows.train", [*cascade, "--set", "clip.train.lr=1e39"], "lr"),
        ("flows.train", [*cascade, "--set", "novalue"], "key=value"),
        ("flows.train", [*cascade, "--data", "folder:/nonexistent"], "nonexistent"),
        ("flows.train", [*cascade, "--clip", "/nonexistent"], "nonexistent"),
        ("flows.train", ["--preset", "smoke", "--workdir", UNWRITABLE], "cannot (be )?creat|not writable"),
        ("flows.train", ["--preset", "smoke", "--workdir", under_file], "not a folder"),
        ("flows.train", ["--preset", "smoke", "--stage", "bogus"], "invalid choice"),
        # flows.generate
        ("flows.generate", ["--prompt", "caf\udcff", "--models", models, *out], "UTF-8"),
        ("flows.generate", [*gen, "--device", "banana"], "device"),
        ("flows.generate", [*gen, "--num-images", BIG], "num-images"),
        ("flows.generate", [*gen, "--guidance", "decoder=1e30,prior=1e30"], "guidance"),
        ("flows.generate", ["--prompt", "x", "--models", models, "--no-mlflow", "--out", UNWRITABLE],
         "cannot (be )?creat|not writable"),
        ("flows.generate", ["--prompt", "x", "--models", models, "--no-mlflow", "--out", under_file], "not a folder"),
        ("flows.generate", ["--prompt", "x", "--models", str(fx["truncated"]), *out], "truncated|cannot read"),
        ("flows.generate", ["--prompt", "x", "--models", str(fx["mismatched"]), *out], "does not match"),
        ("flows.generate", [*gen, "--seed", "-1"], "seed"),
        ("flows.generate", [*gen, "--seed", str(2**70)], "seed"),
        ("flows.generate", [*gen, "--batch-size", BIG], "batch-size"),
        ("flows.generate", [*gen, "--best-of", BIG], "best-of"),
        ("flows.generate", [*gen, "--decoder-best-of", BIG], "decoder-best-of"),
        ("flows.generate", [*gen, "--threads", "100000"], "threads"),
        ("flows.generate", [*gen, "--steps", "prior=abc"], "whole number"),
        ("flows.generate", [*gen, "--output-size", "-1"], "output.size"),
        ("flows.generate", [*gen, "--num-images", "abc"], "invalid int"),
        ("flows.generate", [*gen, "--sampler", "banana"], "sampler"),
        ("flows.generate", [*gen, "--prompt", "a blue square", "--num-images", "600"], "more than 1000 images"),
        # flows.variations
        ("flows.variations", ["--image", pic, "--num-images", BIG, *img], "num-images"),
        ("flows.variations", ["--image", str(root), *img], "not a file"),
        ("flows.variations", ["--image", pic, "--eta", "nan", *img], "eta"),
        ("flows.variations", ["--image", pic, "--device", "banana", *img], "device"),
        ("flows.variations", ["--image", pic, "--models", models, "--no-mlflow", "--out", UNWRITABLE],
         "cannot (be )?creat|not writable"),
        # flows.interpolate
        ("flows.interpolate", ["--image-a", pic, "--image-b", pic, "--steps", BIG, *img], "steps"),
        ("flows.interpolate", ["--image-a", pic, "--image-b", str(root / "missing.png"), *img], "does not exist"),
        ("flows.interpolate", ["--image-a", pic, "--image-b", pic, "--seed", "-3", *img], "seed"),
        # flows.text_diff
        ("flows.text_diff", ["--image", pic, "--from", "a", "--to", "b", "--direction", "prior", "--draws", BIG,
                             *img], "draws"),
        ("flows.text_diff", ["--image", pic, "--from", "a", "--to", "b", "--thetas", "nan", *img], "thetas"),
        ("flows.text_diff", ["--image", pic, "--from", "a", "--to", "b", "--best-of", BIG, *img], "best-of"),
        ("flows.text_diff", ["--image", pic, "--from", "a", "--to", "\udcff", *img], "UTF-8"),
        # flows.demo
        ("flows.demo", ["--preset", "smoke", "--workdir", str(root / "runs"), "--prompts", "1"], "prompts"),
        ("flows.demo", ["--preset", "smoke", "--workdir", str(root / "runs"), "--images-per-prompt", "0"],
         "images-per-prompt|image per prompt"),
        ("flows.demo", ["--preset", "smoke", "--workdir", str(root / "runs"), "--prompts", BIG], "prompts"),
        ("flows.demo", ["--preset", "smoke", "--workdir", str(root / "runs"), "--out", UNWRITABLE],
         "cannot (be )?creat|not writable"),
        ("flows.demo", ["--preset", "smoke", "--workdir", str(root / "runs"), "--set", "nonsense=1"], "nonsense"),
        ("flows.demo", ["--preset", "smoke", "--workdir", under_file], "not a folder"),
        # data.emoji
        ("data.emoji", ["--image-size", "0"], "image_size|image-size"),
        ("data.emoji", ["--image-size", "100000"], "image_size|image-size"),
        ("data.emoji", ["--val-fraction", "2"], "val_fraction|val-fraction"),
        ("data.emoji", ["--path", "/nonexistent"], "nonexistent"),
        ("data.emoji", ["--split", "test"], "invalid choice"),
        # prior.evaluate
        ("prior.evaluate", ["--prior", "/nonexistent", "--shards", shards], "nonexistent"),
        ("prior.evaluate", ["--prior", str(fx["models"] / "prior"), "--shards", "/nonexistent"], "nonexistent"),
        ("prior.evaluate", ["--prior", str(fx["models"] / "prior"), "--shards", shards, "--set", "steps=0"], "steps"),
        ("prior.evaluate", ["--prior", str(fx["models"] / "prior"), "--shards", shards, "--set", "nonsense=1"],
         "nonsense"),
    ]
    if not cuda:
        table.append(("flows.generate", [*gen, "--device", "cuda"], "not available"))
    return [Case(module, tuple(argv), pattern) for module, argv, pattern in table]


def judge(code: int, err: str, pattern: str) -> str | None:
    """None when the command failed the way a user error should; else what was wrong."""
    import re

    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if code != 2:
        return f"exit status {code}"
    if "Traceback" in err:
        return "traceback"
    if len(errors) != 1 or lines[-1] != errors[0]:
        return f"{len(errors)} error lines, last line {lines[-1][:80] if lines else ''!r}"
    if not re.search(pattern, errors[0]):
        return f"message does not match {pattern!r}: {errors[0][:120]!r}"
    return None


def _run_subprocesses(root: Path, code_root: Path, timeout: float, match: str = "") -> None:
    """Run every case as `python -m MODULE ARGV` with the code under `code_root`; print a table."""
    import os
    import subprocess

    fx = build_fixtures(root / "fixtures")
    env = {**os.environ, "PYTHONPATH": str(code_root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "UNCLIP_MLFLOW_DIR": str(root / "mlruns"), "PREFECT_HOME": str(root / "prefect"),
           "PYTHONWARNINGS": "ignore"}
    clean = matched = 0
    table = [case for case in cases(fx) if match in f"{case.module} {' '.join(case.argv)}"]
    for case in table:
        argv = [a.encode("utf-8", "surrogateescape") for a in case.argv]
        try:
            done = subprocess.run([sys.executable, "-m", case.module, *argv], cwd=root, env=env, timeout=timeout,
                                  capture_output=True, preexec_fn=_limit_memory)
            code, err = done.returncode, done.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            code, err = -1, f"timed out after {timeout:g} s"
        verdict = judge(code, err, ".*")
        clean += verdict is None
        matched += verdict is None and judge(code, err, case.pattern) is None
        last = err.strip().splitlines()[-1][:100] if err.strip() else ""
        print(f"{'ok  ' if verdict is None else 'FAIL'} {case.id}\n     {verdict or ''} {last}", flush=True)
    print(f"\n{clean} of {len(table)} handled cleanly ({matched} with the expected message)")


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=_run_subprocesses.__doc__)
    parser.add_argument("--work", required=True, help="an empty scratch folder")
    parser.add_argument("--code", default=str(ROOT), help="the project checkout to run (default: this one)")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--match", default="", help="only the cases whose command line contains this")
    args = parser.parse_args()
    _run_subprocesses(Path(args.work), Path(args.code), args.timeout, args.match)
