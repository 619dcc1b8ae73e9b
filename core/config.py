"""Typed, validated configuration shared by every component.

Each component declares one pydantic model deriving from `Config`; unknown keys and
wrong types are errors at the boundary, and the JSON form travels with the weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ConfigError


class Config(BaseModel):
    """Frozen, strict configuration: no unknown keys, values validated on construction."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        """Validate a mapping, turning pydantic's report into one readable ConfigError."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            raise ConfigError(f"invalid {cls.__name__}: {_summarise(err)}") from None

    def override(self, **changes: Any) -> Self:
        """A validated copy with some fields replaced (model_copy would skip validation)."""
        return type(self).parse({**self.model_dump(), **changes})

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{cls.__name__}: not valid JSON ({err})") from None
        return cls.parse(data)

    def fingerprint(self) -> str:
        """Stable short hash of the canonical JSON form."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


C = TypeVar("C", bound=Config)


def _summarise(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def pick_preset(presets: Mapping[str, C], name: str, kind: str) -> C:
    """Look up a preset by name with an error that lists the choices."""
    if name not in presets:
        raise ConfigError(f"unknown {kind} preset {name!r}; choose one of: {', '.join(presets)}")
    return presets[name]


def apply_overrides(cfg: C, assignments: list[str] | tuple[str, ...]) -> C:
    """Apply command-line overrides such as `train.steps=200` or `model.width=64` to a nested config.

    Values are read as JSON where they parse (numbers, booleans, null, lists), else as strings;
    unknown keys and bad values are ConfigErrors from the validation of the result.
    """
    data = cfg.model_dump(mode="json")
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.steps=200)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section of {type(cfg).__name__}")
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"override {item!r}: unknown key {leaf!r}; known: {', '.join(sorted(node))}")
        node[leaf] = value
    return type(cfg).parse(data)
