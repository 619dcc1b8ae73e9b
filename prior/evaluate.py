"""Scoring a prior on held-out (caption, image) pairs, beside the baseline "text embedding as image embedding".

    python -m prior.evaluate --prior runs/prior/model --shards runs/shards/val [--experiment prior-eval]

Figures (LAION's prior evaluation plus retrieval): mean cos(pred, true image); cos(pred, text)
beside cos(true image, text); cos(pred, image of a shuffled caption); top-1 retrieval of the true
image embedding among the N held-out ones, beside its ceiling (a caption that k images share leaves
1/k); x0 validation loss; where the captions' dataset has a probe (shapes), its zero-shot attribute
accuracy of the predicted embeddings (and of the true image embeddings, CLIP's ceiling).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from core.cli import ArgumentParser
from core.diffusion import training_scheduler, training_target
from data.probes import prefixed, probe_for
from prior.config import PriorEvalConfig
from prior.model import DiffusionPrior
from prior.sample import sample_prior

EmbedText = Callable[[list[str]], Tensor]


@dataclass(frozen=True)
class HeldOut:
    """Held-out pairs as stored in embedding shards."""

    image_embeds: Tensor
    text_embeds: Tensor
    tokens: Tensor
    mask: Tensor
    captions: list[str]

    @classmethod
    def from_tensors(cls, data: Mapping[str, Tensor], captions: Sequence[str], size: int | None = None) -> HeldOut:
        n = len(captions) if size is None else min(size, len(captions))
        return cls(data["image_embeds"][:n].float(), data["text_embeds"][:n].float(), data["text_tokens"][:n].float(),
                   data["text_mask"][:n].bool(), list(captions[:n]))

    @property
    def embeds(self) -> Tensor:  # TextLike, for sample_prior
        return self.text_embeds


def derangement(n: int, seed: int = 0) -> Tensor:
    """A random permutation without fixed points (each caption paired with another's image)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out = torch.empty(n, dtype=torch.long)
    out[order] = order.roll(-1)
    return out


def pair_metrics(pred: Tensor, image: Tensor, shuffled: Tensor) -> dict[str, float]:
    pred, image = F.normalize(pred.float(), dim=-1), F.normalize(image.float(), dim=-1)
    top1 = (pred @ image.T).argmax(dim=1) == torch.arange(len(pred))
    return {"cos_image": float((pred * image).sum(-1).mean()),
            "cos_shuffled": float((pred * image[shuffled]).sum(-1).mean()),
            "retrieval_top1": float(top1.float().mean())}


def embedding_metrics(pred: Tensor, image: Tensor, text: Tensor, seed: int = 0) -> dict[str, float]:
    """Everything that needs only embeddings, for the prior and for the text baseline."""
    shuffled = derangement(len(pred), seed)
    ours = pair_metrics(pred, image, shuffled)
    base = pair_metrics(text, image, shuffled)
    text, image = F.normalize(text.float(), dim=-1), F.normalize(image.float(), dim=-1)
    return {
        "cos_pred_image": ours["cos_image"],
        "cos_pred_text": float((F.normalize(pred.float(), dim=-1) * text).sum(-1).mean()),
        "cos_image_text": float((image * text).sum(-1).mean()),
        "cos_pred_shuffled": ours["cos_shuffled"],
        "retrieval_top1": ours["retrieval_top1"],
        "baseline_cos_image": base["cos_image"],
        "baseline_cos_shuffled": base["cos_shuffled"],
        "baseline_retrieval_top1": base["retrieval_top1"],
    }


def cached(embed_text: EmbedText) -> EmbedText:
    """Embed each distinct caption once (zero-shot scoring reuses the same candidates)."""
    table: dict[str, Tensor] = {}

    def embed(captions: list[str]) -> Tensor:
        new = sorted({c for c in captions if c not in table})
        if new:
            table.update(zip(new, embed_text(new).float().cpu()))
        return torch.stack([table[c] for c in captions])
    return embed


def retrieval_ceiling(captions: Sequence[str]) -> float:
    """The best expected top-1 retrieval from captions alone: a pair whose caption k held-out images
    share is found with chance 1/k at most (when the CLIP is good, the text baseline sits near it)."""
    counts = Counter(captions)
    return sum(1 / counts[c] for c in captions) / len(captions)


def zeroshot_metrics(embeds: Mapping[str, Tensor], captions: Sequence[str], embed_text: EmbedText) -> dict[str, float]:
    """The dataset probe's zero-shot figures of each named set of embeddings, where the captions' dataset
    has a probe (else {})."""
    probe = probe_for(captions)
    if probe is None:
        return {}
    out: dict[str, float] = {}
    for name, emb in embeds.items():
        out.update(prefixed(f"{name}zeroshot_", probe.zeroshot(F.normalize(emb.float(), dim=-1), captions, embed_text)))
    return out


@torch.no_grad()
def validation_loss(prior: DiffusionPrior, held: HeldOut, seed: int = 0) -> float:
    """x0 MSE in the normalised space at evenly spread timesteps with fixed noise (no dropout)."""
    noise_cfg = prior.config.noise
    sched = training_scheduler(noise_cfg)
    device = next(prior.parameters()).device
    x0 = prior.normalise(held.image_embeds.to(device))
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=gen).to(device)
    t = (torch.arange(len(x0)) * noise_cfg.train_steps // len(x0)).to(device)
    was_training = prior.training
    prior.eval()
    try:
        total = 0.0
        for part in torch.arange(len(x0)).split(256):
            out = prior(sched.add_noise(x0[part], eps[part], t[part]), t[part], held.text_embeds[part].to(device),
                        held.tokens[part].to(device), held.mask[part].to(device))
            target = training_target(sched, x0[part], eps[part], t[part])
            total += float(F.mse_loss(out.float(), target, reduction="sum")) / x0.shape[1]
    finally:
        prior.train(was_training)
    return total / len(x0)


def evaluate_prior(prior: DiffusionPrior, held: HeldOut, cfg: PriorEvalConfig,
                   embed_text: EmbedText | None = None) -> dict[str, float]:
    """All figures for one prior on held-out pairs; zero-shot only with `embed_text` and shapes captions."""
    pred = sample_prior(prior, held, range(cfg.seed, cfg.seed + len(held.captions)), steps=cfg.steps,
                        sampler=cfg.sampler, guidance=cfg.guidance, best_of=cfg.best_of).cpu()
    metrics = embedding_metrics(pred, held.image_embeds, held.text_embeds, cfg.seed)
    metrics["retrieval_top1_ceiling"] = retrieval_ceiling(held.captions)
    metrics["val_loss"] = validation_loss(prior, held, cfg.seed)
    if embed_text is not None and cfg.zeroshot:
        named = {"": pred, "image_": held.image_embeds, "baseline_": held.text_embeds}
        metrics.update(zeroshot_metrics(named, held.captions, cached(embed_text)))
    return metrics


def clip_text_embedder(spec) -> EmbedText:
    from clip.encoder import load_encoder

    encoder = load_encoder(spec)
    return lambda captions: encoder.encode_text(captions).embeds


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m prior.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--prior", required=True, help="a saved prior folder")
    parser.add_argument("--shards", required=True, help="held-out embedding shards (with the same CLIP)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an evaluation setting, e.g. steps=16 or guidance=4 (repeatable)")
    parser.add_argument("--experiment", help="also log the figures to this MLflow experiment")
    args = parser.parse_args(argv)
    from core.cli import run_cli

    def job():
        from clip.shards import EmbeddingShards
        from core.config import apply_overrides
        from prior.io import load_prior

        cfg = apply_overrides(PriorEvalConfig(), args.overrides)
        shards = EmbeddingShards.open(args.shards)
        prior = load_prior(args.prior, expected_spec=shards.spec)
        held = HeldOut.from_tensors(shards.load(), shards.captions, cfg.size)
        metrics = evaluate_prior(prior, held, cfg, clip_text_embedder(shards.spec) if cfg.zeroshot else None)
        if args.experiment:
            from core.tracking import start_run

            with start_run(args.experiment, run_name="prior-eval") as tracker:
                tracker.log_params({"prior": args.prior, "shards": args.shards, "eval": cfg.model_dump()})
                tracker.log_metrics(metrics, step=0)
        print(json.dumps(metrics, indent=2, sort_keys=True))
    return run_cli(job)


if __name__ == "__main__":
    raise SystemExit(main())
