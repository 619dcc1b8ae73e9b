"""The shared training loop: convergence, exact resume, EMA, checkpoints and the NaN guard."""

from __future__ import annotations

import math

import pytest
import torch

from core.checkpoint import load_weights
from core.errors import CheckpointError, ConfigError
from core.train_state import find_latest
from core.trainer import NonFiniteLossError, TrainConfig, fit, lr_factor, param_groups, tensor_batches


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


TRUE_W = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def batches(epoch: int, rank: int, world: int):
    g = torch.Generator().manual_seed(1000 + epoch)
    x = torch.randn(40, 4, generator=g)
    y = x @ TRUE_W
    for i in range(rank * 8, 40, 8 * world):
        yield x[i:i + 8], y[i:i + 8]


def mse(model, batch):
    x, y = batch
    noise = 0.01 * torch.randn_like(y)  # uses the global RNG, which the loop re-seeds per step
    return torch.nn.functional.mse_loss(model(x), y + noise)


def make(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def cfg(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=8, lr=1e-2, warmup_steps=2, ema_decay=0.9, log_every=2)
    return TrainConfig.parse({**base, **kw})


def test_loss_decreases_and_ema_is_returned(tmp_path):
    result = fit(make(), mse, batches, cfg(steps=150, lr=3e-2, log_every=10), tmp_path)
    assert result.step == 150
    assert result.losses[-1][1] < 0.2 * result.losses[0][1]
    live = dict(result.model.named_parameters())
    assert any(not torch.equal(p, live[n]) for n, p in result.ema.named_parameters())
    assert find_latest(tmp_path).name == "step_00000150"


def test_resume_is_bit_exact(tmp_path):
    full = fit(make(), mse, batches, cfg(), tmp_path / "full")
    calls = {"n": 0}

    def killed_after_seven_steps(model, batch):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return mse(model, batch)

    with pytest.raises(KeyboardInterrupt):
        fit(make(), killed_after_seven_steps, batches, cfg(checkpoint_every=5), tmp_path / "split")
    assert find_latest(tmp_path / "split").name == "step_00000005"
    # a new process rebuilds the model from scratch; the checkpoint restores everything
    resumed = fit(make(seed=123), mse, batches, cfg(checkpoint_every=5), tmp_path / "split")
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(full.ema.state_dict().items(), resumed.ema.state_dict().items()):
        assert torch.equal(a, b), name
    assert full.losses == resumed.losses


def test_resume_refuses_other_config(tmp_path):
    fit(make(), mse, batches, cfg(steps=3), tmp_path)
    with pytest.raises(CheckpointError, match="different configuration"):
        fit(make(), mse, batches, cfg(steps=6, lr=5e-3), tmp_path)


def test_grad_accumulation_matches_bigger_batch_direction(tmp_path):
    result = fit(make(), mse, batches, cfg(steps=100, grad_accum=2, lr=3e-2, log_every=20), tmp_path)
    assert result.losses[-1][1] < result.losses[0][1]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    calls = {"n": 0}

    def exploding(model, batch):
        calls["n"] += 1
        loss = mse(model, batch)
        return loss * float("nan") if calls["n"] > 6 else loss

    with pytest.raises(NonFiniteLossError, match="step 7"):
        fit(make(), exploding, batches, cfg(checkpoint_every=3), tmp_path)
    latest = find_latest(tmp_path)
    assert latest.name == "step_00000006"
    weights = load_weights(latest / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_checkpoints_are_pruned_and_never_half_written(tmp_path):
    fit(make(), mse, batches, cfg(steps=9, checkpoint_every=2, keep_checkpoints=2), tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000008", "step_00000009"]


def test_evaluate_and_tracker_called_with_ema(tmp_path):
    seen, logged = [], []

    class Recorder:
        def log_metrics(self, metrics, step):
            logged.append((step, dict(metrics)))

        def log_image(self, image, name, step):
            logged.append((step, name))

    def evaluate(model, step):
        seen.append((step, model.training))
        return {"score": float(step)}

    result = fit(make(), mse, batches, cfg(steps=6, eval_every=3), tmp_path, evaluate=evaluate, tracker=Recorder())
    assert seen == [(3, False), (6, False)]
    assert result.metrics == {"score": 6.0}
    assert any("loss" in m for _, m in logged if isinstance(m, dict))


def test_lr_schedule_warmup_then_cosine():
    c = cfg(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, c) == pytest.approx(0.1)
    assert lr_factor(9, c) == pytest.approx(1.0)
    assert lr_factor(55, c) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, c) == pytest.approx(0.1)


def test_bad_config_is_a_clear_error():
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="steps"):
        TrainConfig.parse({"steps": 0})
    with pytest.raises(ConfigError, match="stepz"):
        TrainConfig.parse({"stepz": 3})


def test_logged_loss_is_the_mean_of_its_window_only(tmp_path):
    result = fit(make(), mse, batches, cfg(steps=8, log_every=2, lr=1e-9, warmup_steps=0), tmp_path)
    direct = [mse(result.model.eval(), b).item() for b in batches(0, 0, 1)]
    assert len(result.losses) == 4
    # with a vanishing lr the loss barely moves: each window mean stays near the per-batch losses,
    # while a running mean since step 0 would make later entries equal to the overall mean
    assert result.losses[0][1] != pytest.approx(sum(v for _, v in result.losses) / 4, rel=1e-6)
    assert min(direct) * 0.5 < result.losses[1][1] < max(direct) * 1.5


def test_weight_decay_spares_biases_and_gains():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
    model.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
    decayed, spared = param_groups(model, 0.1)
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [(8, 4)]
    assert len(spared["params"]) == 4  # linear bias, norm weight and bias, logit scale
    optimizer = torch.optim.AdamW([decayed, spared], lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradients: only decoupled decay can move a parameter
    optimizer.step()
    moved = [not torch.equal(p, b) for p, b in zip(model.parameters(), before)]
    assert moved == [p.ndim >= 2 for p in model.parameters()]


def test_tensor_batches_split_ranks_and_check_lengths():
    data = {"x": torch.arange(10), "y": torch.arange(10) * 2}
    batches = tensor_batches(data, batch_size=2, seed=0)
    ranks = [[b for b in batches(epoch=1, rank=r, world=2)] for r in range(2)]
    seen = [int(v) for rank in ranks for b in rank for v in b["x"]]
    assert len(seen) == len(set(seen)) == 8  # two ranks, 5 examples each, full batches only
    assert all(torch.equal(b["y"], b["x"] * 2) for rank in ranks for b in rank)
    assert [b["x"].tolist() for b in batches(1, 0, 2)] == [b["x"].tolist() for b in ranks[0]]  # pure
    with pytest.raises(ConfigError, match="disagree"):
        tensor_batches({"x": torch.zeros(4), "y": torch.zeros(5)}, 2, 0)
    with pytest.raises(ConfigError, match="fewer than one batch"):
        tensor_batches(data, 16, 0)
