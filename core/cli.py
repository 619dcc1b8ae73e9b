"""Shared behaviour of the command lines: offline hub, logging, one-line errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from core.errors import UnclipError


def setup() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_cli(job: Callable[[], object]) -> int:
    """Run a command line's job; user errors become one line on stderr and exit status 2."""
    setup()
    try:
        job()
    except UnclipError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def report(what: str, folder: object, metrics: dict) -> None:
    """What a training command prints at the end: where the model went and its evaluation."""
    print(f"{what} written to {folder}")
    for key, value in sorted(metrics.items()):
        if isinstance(value, int | float):
            print(f"  {key}: {value:.4f}")
