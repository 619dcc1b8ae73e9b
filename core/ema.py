"""Exponential moving average of a model's weights (what every stage evaluates and saves)."""

from __future__ import annotations

import copy

import torch


class EMA:
    """Keeps `shadow`, a frozen copy of the model whose weights trail the live ones.

    The decay warms up as min(decay, (1 + n) / (10 + n)) so early averages are not dominated
    by the random initialisation; every rank applies the same update to the same (synchronised)
    weights, so the shadows stay identical across processes without communication.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.current_decay()
        live = dict(model.named_parameters())
        shadow = [p for name, p in self.shadow.named_parameters() if name in live]
        source = [live[name].detach().to(p.dtype) for name, p in self.shadow.named_parameters() if name in live]
        torch._foreach_lerp_(shadow, source, 1.0 - decay)
        for (_, b_shadow), (_, b_live) in zip(self.shadow.named_buffers(), model.named_buffers()):
            b_shadow.copy_(b_live)
        self.updates += 1
