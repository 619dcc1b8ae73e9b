"""Seeds of named random streams."""

from __future__ import annotations

import hashlib


def stream_seed(seed: int, stream: str) -> int:
    """The seed of `seed`'s named stream of random numbers (a stage, a candidate, sampler noise).

    torch's CPU generator keeps only the low 32 bits of a seed, so streams made by adding multiples
    of 2**32 to a seed all draw the same numbers; a hash of (seed, stream) spreads them over all 32."""
    digest = hashlib.blake2b(f"{int(seed)}/{stream}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")
