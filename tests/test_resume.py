"""Kill and resume: a run killed at any step, while writing a checkpoint, or after its final checkpoint
but before its model folder exists, resumes to byte-identical weights and the same metrics; a
stage retrained with --force on a finished run evaluates again. The parameter guard: weights with
NaN or inf are never checkpointed, and the run stops naming the setting to change."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import load_file

from core.errors import CheckpointError, ConfigError
from core.train_state import find_latest, save_checkpoint
from core.trainer import NonFiniteLossError, TrainConfig, fit

STEPS = 12


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def batches(epoch: int, rank: int, world: int):
    g = torch.Generator().manual_seed(1000 + epoch)
    x = torch.randn(40, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    for i in range(rank * 8, 40, 8 * world):
        yield x[i:i + 8], y[i:i + 8]


def mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y + 0.01 * torch.randn_like(y))


def evaluate(model, step):
    x, y = next(batches(99, 0, 1))
    return {"val_mse": float(torch.nn.functional.mse_loss(model(x), y))}


def cfg(**kw) -> TrainConfig:
    return TrainConfig.parse({"steps": STEPS, "batch_size": 8, "lr": 1e-2, "warmup_steps": 2, "ema_decay": 0.9,
                              "log_every": 2, "checkpoint_every": 3, **kw})


def run(folder, loss=mse):
    torch.manual_seed(123)  # a new process: the model starts from other weights, the checkpoint decides
    return fit(Tiny(), loss, batches, cfg(), folder, evaluate=evaluate)


def killed_at(step: int):
    calls = {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        if calls["n"] > step:
            raise KeyboardInterrupt
        return mse(model, batch)
    return loss


def weights_bytes(folder) -> bytes:
    return (find_latest(folder) / "model.safetensors").read_bytes() + (find_latest(folder) / "ema.safetensors").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("full")
    return run(folder), weights_bytes(folder)


@pytest.mark.parametrize("kill", sorted(random.Random(33).sample(range(1, STEPS), 4)) + [STEPS])
def test_killed_runs_resume_to_the_same_bytes(kill, reference, tmp_path):
    """Killed during step `kill` (STEPS: after the final checkpoint, before anything used the result),
    once more with a half-written checkpoint left behind, then resumed."""
    full, expected = reference
    if kill < STEPS:
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, killed_at(kill))
        (tmp_path / "checkpoints").mkdir(exist_ok=True)
    else:
        run(tmp_path)
    staged = tmp_path / "checkpoints" / ".staging_killed"
    staged.mkdir()
    (staged / "model.safetensors").write_bytes(b"half")
    resumed = run(tmp_path)
    assert weights_bytes(tmp_path) == expected
    assert resumed.metrics == full.metrics and resumed.metrics, "resumed at the end: evaluated again"
    assert resumed.losses == full.losses
    assert not staged.exists()


def test_a_diverging_run_never_checkpoints_non_finite_weights(tmp_path):
    calls = {"n": 0}

    def blows_up_at_step_9(model, batch):
        calls["n"] += 1
        loss = mse(model, batch)
        if calls["n"] == 9:  # a checkpoint step; the loss and its gradient stay finite, the weights do not
            with torch.no_grad():
                model.net[2].bias.fill_(float("inf"))
        return loss

    with pytest.raises(NonFiniteLossError, match=r"parameters became non-finite at step 9.*step_00000006.*train\.lr"):
        run(tmp_path, blows_up_at_step_9)
    for checkpoint in (tmp_path / "checkpoints").iterdir():
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())
    assert find_latest(tmp_path).name == "step_00000006"
    assert run(tmp_path).step == STEPS  # a rerun resumes from the last finite checkpoint


def test_non_finite_weights_are_refused_at_save(tmp_path):
    from core.ema import EMA

    model = Tiny()
    with torch.no_grad():
        model.net[0].weight[0, 0] = float("nan")
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(CheckpointError, match="1 non-finite values"):
        save_checkpoint(tmp_path, 1, model, EMA(Tiny(), 0.9), optimizer, {}, keep=2)
    assert find_latest(tmp_path) is None


def test_lr_has_an_upper_bound():
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig.parse({"lr": 1e39})


def test_a_stage_killed_before_its_model_folder_and_a_forced_rerun(tmp_path, monkeypatch):
    """train_prior killed after fit's final checkpoint (saving the folder) reruns to the same folder and
    metrics; run_stage --force on the finished stage registers a new version with them again."""
    import prior.train
    from flows.stage import run_stage, stage_folder
    from prior.testing import fake_spec, write_fake_shards

    monkeypatch.setenv("UNCLIP_MLFLOW_DIR", str(tmp_path / "mlruns"))
    spec = fake_spec()
    write_fake_shards(tmp_path / "train", spec, 40)
    write_fake_shards(tmp_path / "val", spec, 16, seed=1, split="val")
    settings = prior.train.settings_for("smoke", ["train.steps=3", "train.batch_size=16", "eval.size=8",
                                                  "eval.steps=2"])

    def train(tracker, out):
        return prior.train.train_prior(settings, tmp_path / "train", out, tracker=tracker,
                                       val_shards_dir=tmp_path / "val")

    full_folder, full_metrics = train(None, tmp_path / "full")
    real_save = prior.train.save_prior
    monkeypatch.setattr(prior.train, "save_prior", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train(None, tmp_path / "killed")
    monkeypatch.setattr(prior.train, "save_prior", real_save)
    folder, metrics = train(None, tmp_path / "killed")
    assert (folder / "model.safetensors").read_bytes() == (full_folder / "model.safetensors").read_bytes()
    assert metrics == full_metrics and "cos_pred_image" in metrics

    inputs = {"train": "fake"}
    out = stage_folder(tmp_path / "runs", "prior", settings, inputs)
    first = run_stage("prior", "unclip-prior", settings, inputs, lambda t: train(t, out), "cos_pred_image")
    again = run_stage("prior", "unclip-prior", settings, inputs, lambda t: train(t, out), "cos_pred_image",
                      force=True)
    assert not again.skipped and again.version != first.version
    assert again.metrics == first.metrics and "cos_pred_image" in again.metrics
