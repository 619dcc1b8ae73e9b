"""The one training loop every stage uses (CLIP, prior, decoder, upsamplers).

Stages differ by model, batches and loss; everything else lives here: accelerate for devices
and processes, autocast, gradient accumulation and clipping, AdamW with warmup + cosine decay,
EMA, periodic evaluation, tracking, atomic checkpoints and exact resume.

Exact resume rests on two rules: the global RNG is re-seeded from (seed, step, micro-step,
rank) before every forward pass, and `batches(epoch, rank, world)` is a pure function of its
arguments. A run killed and resumed therefore replays the same numbers bit for bit on a CPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from pydantic import Field
from tqdm.auto import tqdm

from core.config import Config
from core.ema import EMA
from core.errors import ConfigError, UnclipError
from core.memory import keep_freed_memory
from core.precision import autocast, resolve
from core.threads import follow_share
from core.train_state import find_latest, load_checkpoint, remove_staging, save_checkpoint

log = logging.getLogger("core.trainer")


class TrainConfig(Config):
    steps: int = Field(1000, gt=0)
    batch_size: int = Field(64, gt=0, description="per process, per micro-step")
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(3e-4, gt=0, le=1, description="peak learning rate; AdamW diverges long before 1")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine decays to lr * min_lr_ratio")
    grad_clip: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = Field(
        "no", description="bf16/fp16 autocast with fp32 master weights; auto: bf16 if the stage's own step is faster "
        "in it on this machine (timed before the first step, core.precision), else fp32")
    ema_decay: float = Field(0.999, ge=0, lt=1)
    checkpoint_every: int = Field(0, ge=0, description="0: only at the end")
    keep_checkpoints: int = Field(2, gt=0)
    eval_every: int = Field(0, ge=0, description="0: only at the end")
    log_every: int = Field(10, gt=0)
    seed: int = 0


class NonFiniteLossError(UnclipError):
    """Training produced a NaN/inf loss, gradient or parameter; the last finite checkpoint is kept."""


class Tracker(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_image(self, image: Any, name: str, step: int) -> None: ...


Batches = Callable[[int, int, int], Iterable[Any]]
LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]
EvalFn = Callable[[torch.nn.Module, int], dict[str, Any]]


@dataclass
class FitResult:
    model: torch.nn.Module
    ema: torch.nn.Module
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    losses: list[tuple[int, float]] = field(default_factory=list)
    precision: str = "no"


def make_accelerator(mixed_precision: str = "no") -> Accelerator:
    """An Accelerator for this machine: accelerate only forms a multi-process CPU (gloo) group when
    told it runs on the CPU, so say so whenever no accelerator device is present. With `auto` the training
    loop chooses and applies the autocast itself (`fit`)."""
    return Accelerator(mixed_precision="no" if mixed_precision == "auto" else mixed_precision,
                       cpu=not torch.accelerator.is_available())


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio at cfg.steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 8_191 + micro * 131 + rank * 7) % (2**63)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class _Stream:
    """Endless batches over epochs, remembering its place so a resume can skip to it."""

    def __init__(self, batches: Batches, rank: int, world: int, epoch: int = 0, offset: int = 0) -> None:
        self.batches, self.rank, self.world = batches, rank, world
        self.epoch, self.offset = epoch, offset
        self._it = self._open(skip=offset)
        self._ahead: tuple[Any, tuple[int, int]] | None = None

    def _open(self, skip: int) -> Iterator[Any]:
        it = iter(self.batches(self.epoch, self.rank, self.world))
        for _ in range(skip):
            next(it)
        return it

    def peek(self) -> Any:
        """The batch `next` returns next, without taking it (the place a checkpoint records is unchanged)."""
        if self._ahead is None:
            before = (self.epoch, self.offset)
            batch = self.next()
            self._ahead = (batch, (self.epoch, self.offset))
            self.epoch, self.offset = before
        return self._ahead[0]

    def next(self) -> Any:
        if self._ahead is not None:
            (batch, (self.epoch, self.offset)), self._ahead = self._ahead, None
            return batch
        for _ in range(2):
            try:
                batch = next(self._it)
                self.offset += 1
                return batch
            except StopIteration:
                self.epoch, self.offset = self.epoch + 1, 0
                self._it = self._open(skip=0)
        raise UnclipError("the training data yielded no batch: is the dataset empty or smaller than one batch?")


def fit(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    run_config: Config | None = None,
    evaluate: EvalFn | None = None,
    tracker: Tracker | None = None,
    accelerator: Accelerator | None = None,
    desc: str = "train",
) -> FitResult:
    """Train `model` for cfg.steps optimizer steps, resuming from run_dir's latest checkpoint."""
    run_dir = Path(run_dir)
    keep_freed_memory()
    acc = accelerator or make_accelerator(cfg.mixed_precision)
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    identity = {"train": cfg.model_dump(mode="json"), "run": run_config.model_dump(mode="json") if run_config else None}

    torch.manual_seed(cfg.seed)
    ema = EMA(model, cfg.ema_decay)
    # fused: one kernel over all tensors instead of a loop over them (docs/experiments/pipeline.md)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                  fused=True)
    step, epoch, offset, losses, window, chosen = 0, 0, 0, [], [], None
    if main:
        remove_staging(run_dir)  # what a run killed while writing a checkpoint left behind
    latest = find_latest(run_dir)
    if latest is not None:
        state = load_checkpoint(latest, model, ema, optimizer, identity)
        step, epoch, offset, losses, window = (state[k] for k in ("step", "epoch", "offset", "losses", "window"))
        chosen = state.get("precision")  # a resumed `auto` run keeps its precision: the same numbers again
    model, optimizer = acc.prepare(model, optimizer)
    ema.shadow.to(acc.device)
    stream = _Stream(batches, rank, world, epoch, offset)
    if step >= cfg.steps:  # nothing left to train: no probe
        chosen = chosen or "no"
    forward_context, precision = training_autocast(model, loss_fn, stream, cfg, acc, desc, chosen)

    metrics: dict[str, float] = {}
    evaluated = False
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not main, dynamic_ncols=True)
    window_start, t0 = step, time.perf_counter()
    while step < cfg.steps:
        follow_share()
        loss_value, grad_norm = _train_step(model, optimizer, loss_fn, stream, cfg, acc, step, rank,
                                            forward_context)
        _check_finite(_all_finite(model.parameters()), acc, step, "parameters", cfg, run_dir)
        ema.update(acc.unwrap_model(model))
        step += 1
        window.append(loss_value)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean_loss = sum(window) / len(window)
            losses.append((step, mean_loss))
            rate = max(1, step - window_start) * cfg.batch_size * cfg.grad_accum * world / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            if main and tracker is not None:
                tracker.log_metrics(
                    {"loss": mean_loss, "lr": cfg.lr * lr_factor(step - 1, cfg), "grad_norm": grad_norm,
                     "samples_per_s": rate}, step)
            window, window_start, t0 = [], step, time.perf_counter()
        if evaluate is not None and (step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)):
            metrics, evaluated = _run_eval(evaluate, ema.shadow, step, acc, tracker), True
        if step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
            if main:
                save_checkpoint(run_dir, step, acc.unwrap_model(model), ema, optimizer,
                                {"step": step, "epoch": stream.epoch, "offset": stream.offset, "precision": precision,
                                 "losses": losses, "window": window, "identity": identity}, cfg.keep_checkpoints)
            acc.wait_for_everyone()
    bar.close()
    if evaluate is not None and not evaluated:  # resumed from the final checkpoint: evaluate what it holds
        metrics = _run_eval(evaluate, ema.shadow, step, acc, tracker)
    acc.wait_for_everyone()
    return FitResult(acc.unwrap_model(model), ema.shadow, step, metrics, losses, precision)


def training_autocast(model, loss_fn: LossFn, stream: _Stream, cfg: TrainConfig, acc: Accelerator,
                      stage: str, chosen: str | None = None) -> tuple[Callable[[], Any], str]:
    """(a context factory for the forward pass, its precision "no" / "bf16" / "fp16"): accelerate's autocast
    unless `auto`; `auto` takes `chosen` (a resumed run's) or bf16 autocast if a forward and backward of the
    first batch run faster in it here (every process takes rank 0's choice)."""
    if cfg.mixed_precision != "auto":
        return acc.autocast, cfg.mixed_precision
    if chosen is None:
        chosen = _probe_training(model, loss_fn, stream, cfg, acc, stage)
    log.info("%s trains in %s", stage, "bf16 autocast (fp32 master weights)" if chosen == "bf16" else "fp32")
    return (lambda: autocast("bf16" if chosen == "bf16" else "fp32", acc.device)), chosen


def _probe_training(model, loss_fn: LossFn, stream: _Stream, cfg: TrainConfig, acc: Accelerator, stage: str) -> str:
    batch = to_device(stream.peek(), acc.device)
    buffers = [(b, b.clone()) for b in model.buffers()]  # batch norms' running statistics: untouched by the probe

    def probe(precision):
        with autocast(precision, acc.device):
            loss = loss_fn(model, batch)
        loss.backward()
        model.zero_grad(set_to_none=True)

    model.train()
    choice = resolve("auto", stage, acc.device, probe, key=("train", cfg.batch_size))
    with torch.no_grad():
        for live, saved in buffers:
            live.copy_(saved)
    if acc.num_processes > 1:
        choice = broadcast_object_list([choice])[0]
    return "bf16" if choice == "bf16" else "no"


def _train_step(model, optimizer, loss_fn, stream, cfg, acc, step, rank, forward_context) -> tuple[float, float]:
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(step, cfg)
    model.train()
    total = 0.0
    for micro in range(cfg.grad_accum):
        torch.manual_seed(step_seed(cfg.seed, step, micro, rank))
        batch = to_device(stream.next(), acc.device)
        sync = micro == cfg.grad_accum - 1
        with nullcontext() if sync else acc.no_sync(model), forward_context():
            loss = loss_fn(model, batch)
        _check_finite(torch.isfinite(loss.detach()).all(), acc, step, "loss", cfg)
        acc.backward(loss / cfg.grad_accum)
        total += loss.item() / cfg.grad_accum
    grad_norm = float("nan")
    if cfg.grad_clip is not None:
        grad_norm = float(acc.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        _check_finite(torch.tensor(math.isfinite(grad_norm)), acc, step, "gradient norm", cfg)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, grad_norm


def tensor_batches(data: dict[str, torch.Tensor], batch_size: int, seed: int) -> Batches:
    """Shuffled full batches of in-memory tensors (one row per example), a fresh order each epoch; a pure
    function of (epoch, rank, world), as exact resume needs. Each process takes every world-th example."""
    counts = {len(v) for v in data.values()}
    if len(counts) != 1:
        raise ConfigError(f"the training tensors disagree in length: { {k: len(v) for k, v in data.items()} }")
    (count,) = counts
    if count < batch_size:
        raise ConfigError(f"{count} training examples are fewer than one batch of {batch_size}")

    def batches(epoch: int, rank: int, world: int):
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        mine = order[rank::world]
        for i in range(0, len(mine) - batch_size + 1, batch_size):
            idx = mine[i:i + batch_size]
            yield {k: v[idx] for k, v in data.items()}
    return batches


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: gains, biases and scalars such as CLIP's logit scale stay undecayed
    (as in open_clip and GPT training); decaying a temperature or a norm gain only fights the loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _all_finite(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """One boolean for all tensors (a single device sync): an AdamW step at a huge lr can turn weights
    into inf while the loss and gradient that led there were still finite."""
    flags = [torch.isfinite(p.detach()).all() for p in params]
    return torch.stack(flags).all() if flags else torch.tensor(True)


def _check_finite(finite: torch.Tensor, acc: Accelerator, step: int, what: str, cfg: TrainConfig,
                  run_dir: Path | None = None) -> None:
    bad = torch.tensor([0.0 if bool(finite) else 1.0], device=acc.device)
    if acc.num_processes > 1:
        bad = acc.reduce(bad, reduction="sum")
    if bad.item() > 0:
        latest = find_latest(run_dir) if run_dir is not None else None
        kept = f"the last finite checkpoint ({latest.name}) is kept" if latest else "no checkpoint was written"
        raise NonFiniteLossError(
            f"the {what} became non-finite at step {step + 1}; stopped without saving this state, {kept}. "
            f"Lower train.lr (now {cfg.lr:g}) or train.grad_clip (now {cfg.grad_clip}), or set "
            "train.mixed_precision=no (settings that change start a fresh run)")


def _run_eval(evaluate: EvalFn, ema_model: torch.nn.Module, step: int, acc: Accelerator, tracker) -> dict:
    results: dict[str, Any] = {}
    if acc.is_main_process:
        ema_model.eval()
        results = evaluate(ema_model, step)
        numbers = {k: float(v) for k, v in results.items() if isinstance(v, int | float)}
        log.info("step %d eval: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in numbers.items()))
        if tracker is not None:
            tracker.log_metrics(numbers, step)
            for name, value in results.items():
                if hasattr(value, "save") and not isinstance(value, int | float):
                    tracker.log_image(value, name, step)
    acc.wait_for_everyone()
    return {k: v for k, v in results.items() if isinstance(v, int | float)}
