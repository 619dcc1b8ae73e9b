"""Spherical linear interpolation with one angle per pair of vectors.

slerp(a, b, θ) = sin((1−θ)Ω)/sin Ω · a + sin(θΩ)/sin Ω · b with Ω = arccos(â · b̂), a single scalar
per pair (diffusers' community interpolation pipelines take arccos element-wise: not slerp).
Nearly parallel pairs fall back to linear interpolation (the limit as Ω → 0); exactly opposite
pairs, where every great circle joins a and b, turn in a fixed plane spanned by â and a direction
orthogonal to it, scaling the norm linearly from |a| to |b|.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Below this angle (radians) from 0 or π, the general formula divides by a vanishing sin Ω.
EPS_ANGLE = 1e-4


def angle(a: Tensor, b: Tensor) -> Tensor:
    """Ω [...] between the vectors of a and b [..., D], in [0, π] (float64)."""
    a64, b64 = a.double(), b.double()
    dot = (a64 * b64).sum(-1) / (a64.norm(dim=-1) * b64.norm(dim=-1)).clamp_min(1e-300)
    return torch.arccos(dot.clamp(-1.0, 1.0))


def slerp(a: Tensor, b: Tensor, theta: float | Tensor) -> Tensor:
    """Interpolate along the great circle from a (θ = 0) to b (θ = 1); a, b: [..., D] of one shape,
    θ a number or a tensor broadcastable to [...]. Works for any D ≥ 1 and keeps a's dtype."""
    if a.shape != b.shape:
        raise ValueError(f"slerp needs vectors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim == 0:
        raise ValueError("slerp needs vectors (at least one dimension), got scalars")
    a64, b64 = a.double(), b.double()
    theta = torch.as_tensor(theta, dtype=torch.float64, device=a.device)
    omega = angle(a, b)
    theta = torch.broadcast_to(theta, omega.shape)[..., None]
    omega = omega[..., None]
    sin_omega = torch.sin(omega)
    safe = sin_omega.clamp_min(1e-12)
    general = (torch.sin((1 - theta) * omega) * a64 + torch.sin(theta * omega) * b64) / safe
    linear = (1 - theta) * a64 + theta * b64
    out = torch.where(omega < EPS_ANGLE, linear, general)
    opposite = omega > math.pi - EPS_ANGLE
    if bool(opposite.any()):
        out = torch.where(opposite, _half_turn(a64, b64, theta), out)
    return out.to(a.dtype)


def slerp_path(a: Tensor, b: Tensor, thetas: Sequence[float] | Tensor) -> Tensor:
    """[K, ..., D]: slerp(a, b, θ_k) for each of the K values of θ."""
    return torch.stack([slerp(a, b, float(t)) for t in torch.as_tensor(thetas, dtype=torch.float64)])


def _half_turn(a: Tensor, b: Tensor, theta: Tensor) -> Tensor:
    """Opposite a and b: rotate â by θπ towards a fixed unit vector orthogonal to it."""
    norm_a, norm_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    unit = a / norm_a.clamp_min(1e-300)
    ortho = _orthogonal(unit)
    direction = torch.cos(theta * math.pi) * unit + torch.sin(theta * math.pi) * ortho
    return direction * ((1 - theta) * norm_a + theta * norm_b)


def _orthogonal(unit: Tensor) -> Tensor:
    """A unit vector orthogonal to each unit vector: Gram-Schmidt of its smallest coordinate axis."""
    if unit.shape[-1] < 2:
        return torch.zeros_like(unit)  # no orthogonal direction in one dimension: pass through 0
    axis = torch.zeros_like(unit).scatter_(-1, unit.abs().argmin(-1, keepdim=True), 1.0)
    ortho = axis - (axis * unit).sum(-1, keepdim=True) * unit
    return ortho / ortho.norm(dim=-1, keepdim=True)
