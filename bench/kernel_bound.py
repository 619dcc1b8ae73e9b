"""The ceiling bf16 can reach on a stage: its own matmuls and convolutions, replayed alone in each precision.

`record(run)` notes the shape, strides, dtype and arguments of every matmul and convolution one call of
`run` executes; `replayer(calls)` returns a function that runs exactly those kernels again on random
tensors of the same layout. The fp32 run's kernels against the bf16 run's give the speed-up the
hardware's kernels allow at the stage's own sizes; everything else a stage does (norms, activations,
casts, Python) only lowers it.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# under inference mode linear, matmul and conv2d reach the recorder whole, undecomposed
KERNELS = {aten.addmm.default, aten.mm.default, aten.bmm.default, aten.baddbmm.default, aten.convolution.default,
           aten.linear.default, aten.matmul.default, aten.conv2d.default}


class Call(NamedTuple):
    op: object
    args: tuple  # tensors as ("tensor", size, stride, dtype), other arguments as they were
    kwargs: tuple = ()  # (name, value) pairs, described alike


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in KERNELS:
            self.calls.append(Call(func, tuple(_describe(a) for a in args),
                                   tuple((k, _describe(v)) for k, v in (kwargs or {}).items())))
        return func(*args, **(kwargs or {}))


def _describe(a):
    if torch.is_tensor(a):
        return ("tensor", tuple(a.shape), tuple(a.stride()), a.dtype)
    if isinstance(a, (list, tuple)):
        return tuple(_describe(x) for x in a)
    return a


def _is_tensor(desc) -> bool:
    return isinstance(desc, tuple) and bool(desc) and desc[0] == "tensor"


def record(run) -> list[Call]:
    """The matmuls and convolutions one call of `run()` executes, in order."""
    recorder = _Recorder()
    with recorder:
        run()
    return recorder.calls


def record_precisions(run) -> dict[str, list[Call]]:
    """`record(run(p))` for p in fp32 and bf16: each precision's own kernels."""
    return {p: record(partial(run, p)) for p in ("fp32", "bf16")}


def replayer(calls: list[Call]):
    """A function that runs `calls` once more on random tensors (made here once, not timed)."""
    made: dict[tuple, torch.Tensor] = {}

    def tensor(desc):
        if desc not in made:
            _, size, stride, dtype = desc
            storage = sum((s - 1) * st for s, st in zip(size, stride)) + 1
            made[desc] = torch.randn(storage).to(dtype).as_strided(size, stride)
        return made[desc]

    def build(a):
        if _is_tensor(a):
            return tensor(a)
        if isinstance(a, tuple):
            return tuple(build(x) for x in a)
        return a

    prepared = [(c.op, tuple(build(a) for a in c.args), {k: build(v) for k, v in c.kwargs}) for c in calls]

    def run() -> None:
        with torch.inference_mode():
            for op, args, kwargs in prepared:
                op(*args, **kwargs)

    return run


def _name(op) -> str:
    return str(op).split(".")[-2] if "." in str(op) else str(op)


def summary(calls: list[Call]) -> dict[str, int]:
    """How many calls of each kind (for the report)."""
    return dict(Counter(_name(c.op) for c in calls))


def shape_key(call: Call) -> tuple:
    """The kernel and its operands' shapes, not their dtypes: a stage's fp32 and bf16 calls share keys."""
    return (_name(call.op), *(a[1] for a in call.args if _is_tensor(a)))


def per_shape(calls: dict[str, list[Call]], top: int) -> list[dict]:
    """The `top` kernel shapes with the most fp32 time, each shape's calls replayed alone in both precisions
    (ms for all its calls of one stage call)."""
    from core.precision import median_seconds

    groups: dict[str, dict[tuple, list[Call]]] = {p: {} for p in calls}
    for p, cs in calls.items():
        for c in cs:
            groups[p].setdefault(shape_key(c), []).append(c)
    rows = []
    for key, fp32_calls in groups["fp32"].items():
        seconds = median_seconds({p: replayer(groups[p].get(key, [])) for p in calls}, rounds=3)
        rows.append({"kernel": key[0], "shapes": [list(s) for s in key[1:]], "calls": len(fp32_calls),
                     "ms": {p: 1e3 * t for p, t in seconds.items()}})
    return sorted(rows, key=lambda r: -r["ms"]["fp32"])[:top]
