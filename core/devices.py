"""Which torch device to run on: the machine's accelerator when it has one, checked names otherwise;
and the precision a sampling stage runs in."""

from __future__ import annotations

import torch

from core.errors import ConfigError


def default_device() -> str:
    """The current accelerator (cuda, mps, xpu, ...) if there is one, else cpu."""
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return accelerator.type if accelerator is not None else "cpu"


def check_device(name: str | torch.device | None) -> torch.device:
    """A usable device, or a ConfigError naming what is wrong (unknown name, or not on this machine)."""
    if name is None:
        return torch.device(default_device())
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {str(name)!r} ({err}); e.g. cpu, cuda, cuda:1, mps") from None
    if device.type == "cpu":
        return device
    try:
        usable = getattr(torch, device.type).is_available()
    except AttributeError:
        usable = False
    if not usable:
        raise ConfigError(f"device {str(name)!r} is not available on this machine (default here: {default_device()})")
    count = getattr(getattr(torch, device.type), "device_count", lambda: 1)()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device {str(name)!r} does not exist: this machine has {count} {device.type} device(s)")
    return device
