"""Which precision a stage runs in: fp32, bf16, or `auto`, chosen on the machine at hand.

bf16 pays only where the hardware has bf16 units (GPUs from Ampere on; CPUs with AVX512-BF16 or AMX)
and where the network's time goes to large kernels rather than to the many small operations around
them. `auto` therefore asks the hardware first (its flags, then on CPUs a matmul in both) and then times
the stage's own work in both precisions (interleaved, medians), keeps the faster and logs why; the choice
is remembered per stage, device, thread count and input shape, so a process pays the probe once.

Inference runs in bf16 weights (`inference_copy`), not under autocast, which would cast every weight at
every call; training keeps fp32 master weights under bf16 autocast (core.trainer).
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
import weakref
from collections.abc import Callable, Hashable
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from core.errors import ConfigError

Precision = Literal["fp32", "bf16", "auto"]
Resolved = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16", "auto")
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}

log = logging.getLogger("core.precision")
_choices: dict[Hashable, tuple[Resolved, dict[str, float]]] = {}


def check_precision(precision: str) -> Precision:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision  # type: ignore[return-value]


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_bf16_units(device: torch.device | str) -> bool:
    """Whether the device computes bf16 natively (else bf16 is emulated and always slower)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    return device.type in ("xpu", "mps")


def bf16_kernel_speedup() -> float:
    """How many times faster a 512² matmul runs in bf16 than in fp32 on the CPU (once per thread count).

    CPUs that report AVX512-BF16 do not all compute it faster: some run bf16 matmuls and convolutions at
    half fp32's rate (seen on Intel Xeons without AMX), and then no stage can gain from bf16."""
    return _kernel_speedup(torch.get_num_threads())


@functools.cache
def _kernel_speedup(threads: int) -> float:
    def matmuls(dtype: torch.dtype) -> Callable[[], None]:
        a = torch.randn(512, 512).to(dtype)
        return lambda: [a @ a for _ in range(4)]

    seconds = median_seconds({"fp32": matmuls(torch.float32), "bf16": matmuls(torch.bfloat16)}, rounds=3)
    return seconds["fp32"] / max(seconds["bf16"], 1e-9)


def bf16_cannot_pay(device: torch.device | str) -> str | None:
    """Why bf16 cannot make any stage faster on this device, or None where only timing the stage can tell."""
    if not has_bf16_units(device):
        return "the device has no bf16 units"
    if torch.device(device).type == "cpu":
        speedup = bf16_kernel_speedup()
        if speedup < 1.0:
            return f"its bf16 matmuls run at {speedup:.2f}x fp32's speed"
    return None


def autocast(precision: Resolved, device: torch.device | str):
    """bf16 autocast for training (fp32 master weights), nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def median_seconds(variants: dict[str, Callable[[], object]], rounds: int = 2, warmup: int = 1) -> dict[str, float]:
    """Median wall seconds of each variant, run round-robin so that a busy machine slows them alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def resolve(precision: Precision, stage: str, device: torch.device | str, probe: Callable[[Resolved], object],
            key: Hashable = (), rounds: int = 2) -> Resolved:
    """fp32 or bf16 for `stage`: as given, or for `auto` the faster of the two on `probe` (the stage's own
    step, run in the given precision), asked once per (stage, device, threads, key)."""
    check_precision(precision)
    if precision != "auto":
        return precision
    device = torch.device(device)
    why = bf16_cannot_pay(device)
    if why is not None:
        _remember(stage, device, key, "fp32", {}, why)
        return "fp32"
    full_key = (stage, str(device), torch.get_num_threads(), key)
    if full_key not in _choices:
        seconds = median_seconds({p: functools.partial(probe, p) for p in ("fp32", "bf16")}, rounds=rounds)
        choice: Resolved = "bf16" if seconds["bf16"] < seconds["fp32"] else "fp32"
        _choices[full_key] = (choice, seconds)
        log.info("%s precision auto -> %s on %s, %d threads (%s step %.3fs, %s %.3fs)", stage, choice, device,
                 torch.get_num_threads(), "bf16", seconds["bf16"], "fp32", seconds["fp32"])
    return _choices[full_key][0]


def _remember(stage: str, device: torch.device, key: Hashable, choice: Resolved, seconds: dict, why: str) -> None:
    full_key = (stage, str(device), torch.get_num_threads(), key)
    if full_key not in _choices:
        _choices[full_key] = (choice, seconds)
        log.info("%s precision auto -> %s on %s: %s", stage, choice, device, why)


def choices() -> dict[Hashable, tuple[Resolved, dict[str, float]]]:
    """Every `auto` decision of this process with its probe's median seconds (for logs and benchmarks)."""
    return dict(_choices)


def forget_choices() -> None:
    _choices.clear()


_copies: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def inference_copy(model: nn.Module, precision: Resolved, memory_format: torch.memory_format | None = None
                   ) -> nn.Module:
    """The model for inference in `precision` (and memory format): itself for fp32 in its own layout, else a
    frozen copy made once and kept while the model lives. A copy follows the model's weights as they were
    when it was last asked for: it is made again once a weight or buffer has changed."""
    if precision == "fp32" and memory_format is None:
        return model
    store = _copies.setdefault(model, {})
    key = (precision, memory_format)
    version = _weights_version(model)
    if key not in store or store[key][0] != version:
        import copy

        twin = copy.deepcopy(model).eval().requires_grad_(False).to(DTYPES[precision])
        if memory_format is not None:
            twin = twin.to(memory_format=memory_format)
        store[key] = (version, twin)
    return store[key][1]


def _weights_version(model: nn.Module) -> tuple[int, ...]:
    """Changes when a weight or buffer is written in place (torch's version counters) or replaced."""
    return tuple((id(t), 0 if t.is_inference() else t._version) for t in (*model.parameters(), *model.buffers()))
