"""CPU thread shares of jobs that train at once in one process (the cascade's lanes).

torch's intra-op thread count belongs to each calling thread (OpenMP), so a job can only change its
own. `flows.train.run_lanes` posts each lane's share here, and the training loop calls
`follow_share()` between steps: when one lane runs out of work, the others take its threads at their
next step instead of finishing on one thread while a core idles.
"""

from __future__ import annotations

import threading

import torch

_shares: dict[int, int] = {}


def post_share(threads: int, ident: int | None = None) -> None:
    """Give the thread `ident` (default: the caller) this many torch threads from its next step on."""
    if threads < 1:
        raise ValueError(f"a lane needs at least one thread, got {threads}")
    _shares[threading.get_ident() if ident is None else ident] = threads


def drop_share(ident: int | None = None) -> None:
    _shares.pop(threading.get_ident() if ident is None else ident, None)


def follow_share() -> None:
    """Set the calling thread's torch threads to its posted share, if it has one and differs."""
    want = _shares.get(threading.get_ident())
    if want is not None and want != torch.get_num_threads():
        torch.set_num_threads(want)
