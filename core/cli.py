"""Shared behaviour of the command lines: offline hub, logging, one-line errors, checked options.

Every mistake on a command line ends in one `error: ...` line on stderr and exit status 2, found
before any work starts where it can be: argparse errors (ArgumentParser), numbers out of range
(`int_in`, `float_in`), output folders that cannot be written (`check_output_dir`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.errors import ConfigError, UnclipError

# Seeds are drawn by torch's CPU generator, which keeps 32 bits (core/seeds.py).
MAX_SEED = 2**32 - 1


def setup() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_cli(job: Callable[[], object]) -> int:
    """Run a command line's job; user errors become one line on stderr and exit status 2."""
    setup()
    try:
        job()
    except UnclipError as err:
        _close_progress_bars()
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _close_progress_bars() -> None:
    """End the progress bars an error interrupted, so that the error starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's errors: one `error:` line (usage on --help only), exit status 2,
    and arguments that are not UTF-8 text refused here rather than deep inside Prefect or MLflow."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for name, value in vars(parsed).items():
            for text in value if isinstance(value, list) else [value]:
                if isinstance(text, str) and not _is_utf8(text):
                    self.error(f"argument {name.replace('_', '-')}: {text!r} is not valid UTF-8 text")
        return parsed


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse `type`: a whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value
    return parse


def float_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse `type`: a finite number in [low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value
    return parse


def thread_count() -> Callable[[str], int]:
    """An argparse `type` for --threads: 1 up to four per CPU core (more only slows a run down)."""
    return int_in(1, 4 * (os.cpu_count() or 1))


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for this process, when a command line was given --threads."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """`path` is a folder or can be made one: checked before any work, so a run never computes
    everything and then fails to save. Creates nothing (a probe folder is made and removed)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} exists and is not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".unclip-write-check-", dir=existing))
    except OSError as err:
        raise ConfigError(f"{flag} {path} cannot be created or written in {existing} "
                          f"({err.strerror or err})") from None
    return path


def report(what: str, folder: object, metrics: dict) -> None:
    """What a training command prints at the end: where the model went, its evaluation and the
    data it skipped or converted (data.skipped.* and data.converted.* counts)."""
    print(f"{what} written to {folder}")
    for key, value in sorted(metrics.items()):
        if isinstance(value, int | float):
            print(f"  {key}: {value:g}" if key.startswith("data.") else f"  {key}: {value:.4f}")
