"""Run under torchrun by test_distributed.py: a few CLIP training steps on 2 CPU processes (gloo).

Each rank writes the SHA-256 of its final weights so the test can check they are identical.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from clip.batches import contrastive_batches
from clip.train import make_loss, prepare_splits, settings_for
from core.tracking import main_process_run
from core.trainer import fit, make_accelerator


def main(out: Path) -> None:
    settings = settings_for("smoke", ["train.steps=3", "data.num_examples=200", "data.val_size=20"])
    acc = make_accelerator()
    train, _ = prepare_splits(settings, out / f"data{acc.process_index}")
    batches = train.batches(("images", "text_ids"), settings.train.batch_size, settings.train.seed,
                            prepare=contrastive_batches(settings.train.batch_size))
    torch.manual_seed(0)
    model = settings.model.build()
    with main_process_run("unclip-distributed-test") as tracker:
        result = fit(model, make_loss(acc.num_processes, acc.process_index),
                     batches,
                     settings.train, out / "run", run_config=settings, tracker=tracker, accelerator=acc)
    digest = hashlib.sha256()
    for name, tensor in sorted(result.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    (out / f"rank{acc.process_index}.sha").write_text(f"{acc.num_processes} {digest.hexdigest()}")
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
