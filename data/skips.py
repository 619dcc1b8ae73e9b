"""Counting what was skipped or converted, so no data is ever dropped silently."""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict

log = logging.getLogger("data")

SKIP, CONVERT = "skipped", "converted"


class BadItem(Exception):
    """An item that cannot be used; `reason` is the short name it is counted under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SkipCounter:
    """Skipped items by reason, and images kept but converted to RGB by source mode.

    An item counted with a key is counted once however often it is read (several epochs);
    items counted without a key always add one. The first skip of each reason is logged as
    a warning, the first conversion of each mode as info.
    """

    def __init__(self) -> None:
        self._unkeyed: Counter[tuple[str, str]] = Counter()
        self._keyed: defaultdict[tuple[str, str], set[str]] = defaultdict(set)

    def add(self, reason: str, key: str | None = None, detail: str = "") -> None:
        if self._count(SKIP, reason) == 0:
            log.warning(
                "skipped %s: %s%s (later %s skips are only counted)",
                key or "an item",
                reason,
                f" ({detail})" if detail else "",
                reason,
            )
        self._record(SKIP, reason, key)

    def convert(self, mode: str, key: str | None = None) -> None:
        if self._count(CONVERT, mode) == 0:
            log.info(
                "converted %s from mode %s to RGB (later ones are only counted)", key or "an image", mode
            )
        self._record(CONVERT, mode, key)

    def _record(self, kind: str, name: str, key: str | None) -> None:
        if key is None:
            self._unkeyed[kind, name] += 1
        else:
            self._keyed[kind, name].add(key)

    def _count(self, kind: str, name: str) -> int:
        return self._unkeyed[kind, name] + len(self._keyed.get((kind, name), ()))

    def _counts(self, kind: str) -> dict[str, int]:
        names = {n for k, n in self._unkeyed if k == kind} | {n for k, n in self._keyed if k == kind}
        return {name: self._count(kind, name) for name in sorted(names) if self._count(kind, name)}

    @property
    def skipped(self) -> dict[str, int]:
        return self._counts(SKIP)

    @property
    def converted(self) -> dict[str, int]:
        return self._counts(CONVERT)

    @property
    def total(self) -> int:
        """Number of skipped items (converted ones are kept, so they are not included)."""
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {SKIP: self.skipped, CONVERT: self.converted}

    def merge(self, other: SkipCounter) -> SkipCounter:
        """Add another counter (e.g. another worker's) into this one; returns self."""
        self._unkeyed.update(other._unkeyed)
        for entry, keys in other._keyed.items():
            self._keyed[entry] |= keys
        return self

    def __str__(self) -> str:
        return f"skipped {_describe(self.skipped)}; converted {_describe(self.converted)}"

    def __repr__(self) -> str:
        return f"SkipCounter({self})"


def _describe(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{name}={n}" for name, n in counts.items()) + ")"


def skip_metrics(counts: dict[str, dict[str, int]]) -> dict[str, float]:
    """Skip and conversion counts ({"skipped": {...}, "converted": {...}}) as flat metrics: `data.skipped`
    (the total), `data.skipped.<reason>`, `data.converted.<mode>`, for a stage's summary and MLflow run."""
    skipped, converted = counts.get(SKIP, {}), counts.get(CONVERT, {})
    out = {"data.skipped": float(sum(skipped.values()))}
    out.update({f"data.skipped.{_name(reason)}": float(n) for reason, n in sorted(skipped.items())})
    out.update({f"data.converted.{_name(mode)}": float(n) for mode, n in sorted(converted.items())})
    return out


def _name(text: str) -> str:
    """A metric-name-safe form of a reason or mode (`I;16` -> `I_16`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)
