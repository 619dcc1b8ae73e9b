"""The prior network: diffusers' `PriorTransformer` plus a learned null caption for guidance.

Token sequence (causal mask): [caption token states (projected)] [CLIP text embedding]
[timestep embedding] [noised image embedding] [learned final token `prd`]; the output at the
final token is the prediction. The transformer sits at `self.prior` with diffusers' own
parameter names, so a Karlo prior state dict loads under the `prior.` prefix; the embedding
statistics live in its `clip_mean` / `clip_std` parameters exactly where Karlo keeps them.

The null caption (classifier-free guidance) is learned, as in DALLE2-pytorch: a null text
embedding [D] and null token states [L, W], with every null token visible (mask all True).
diffusers' unCLIP pipeline instead uses CLIP's encoding of "" with its mask: `null_caption=
"empty_caption"` keeps that encoding in the same parameters, frozen, and its mask in `null_mask`
(unclip.convert). The network knows nothing about schedules (see core.diffusion).
"""

from __future__ import annotations

import torch
from diffusers import PriorTransformer
from torch import Tensor, nn

from clip.spec import ClipSpec
from core.errors import ConfigError
from prior.config import PriorConfig

# text embedding, timestep, noised image embedding, final token
ADDITIONAL_TOKENS = 4


class DiffusionPrior(nn.Module):
    """`forward(x_t, t, text_embeds, tokens, mask, drop=None)` → the network output [B, D] in the
    normalised embedding space (x0 for prediction 'sample')."""

    def __init__(self, config: PriorConfig, clip_spec: ClipSpec | None = None) -> None:
        super().__init__()
        if not config.complete:
            raise ConfigError("PriorConfig needs embed_dim, context_length and text_width: use config.for_clip(...)")
        self.config = config
        self.clip_spec = clip_spec
        d, length, w = config.embed_dim, config.context_length, config.text_width
        self.prior = PriorTransformer(
            num_attention_heads=config.heads,
            attention_head_dim=config.head_dim,
            num_layers=config.layers,
            embedding_dim=d,
            num_embeddings=length,
            additional_embeddings=ADDITIONAL_TOKENS,
            dropout=config.dropout,
            norm_in_type="layer" if config.norm_in else None,
            embedding_proj_norm_type=None,
            encoder_hid_proj_type="linear",
            added_emb_type="prd",
        )
        if w != d:
            # diffusers projects token states from `embedding_dim`; keep its parameter name.
            self.prior.encoder_hidden_states_proj = nn.Linear(w, config.width)
        self.prior.clip_mean.requires_grad_(False)
        self.prior.clip_std.requires_grad_(False)
        if config.normalise == "l2_scale":
            self.set_stats(torch.zeros(d), torch.full((d,), 1.0 / config.scale()))
        self.null_text_embed = nn.Parameter(torch.randn(d) / d**0.5)
        self.null_tokens = nn.Parameter(torch.zeros(length, w))
        if config.null_caption == "empty_caption":
            self.null_text_embed.requires_grad_(False)
            self.null_tokens.requires_grad_(False)
            self.register_buffer("null_mask", torch.zeros(length, dtype=torch.bool))

    @torch.no_grad()
    def set_empty_caption(self, embeds: Tensor, tokens: Tensor, mask: Tensor) -> None:
        """Make CLIP's encoding of "" ([D], [L, W], [L]) the null caption (null_caption='empty_caption')."""
        if self.config.null_caption != "empty_caption":
            raise ConfigError("this prior learns its null caption (null_caption='learned')")
        self.null_text_embed.copy_(embeds)
        self.null_tokens.copy_(tokens)
        self.null_mask.copy_(mask.bool())

    @property
    def unit_embeddings(self) -> bool:
        """Whether its CLIP's embeddings are L2-normalised (this project's) or raw (Karlo's)."""
        return self.clip_spec is None or self.clip_spec.normalise

    # -- embedding normalisation (the same rule in training and sampling) --------------------
    @torch.no_grad()
    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        d = self.config.embed_dim
        if mean.shape != (d,) or std.shape != (d,):
            raise ConfigError(f"normalisation stats must be [{d}], got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not bool((std > 0).all()):
            raise ConfigError("normalisation std must be positive in every dimension")
        self.prior.clip_mean.copy_(mean.reshape(1, d))
        self.prior.clip_std.copy_(std.reshape(1, d))

    def stats(self) -> tuple[Tensor, Tensor]:
        std = self.prior.clip_std
        if not bool((std > 0).all()):
            raise ConfigError("the prior's normalisation stats are not set (train it or load a saved prior)")
        return self.prior.clip_mean, std

    def normalise(self, z: Tensor) -> Tensor:
        mean, std = self.stats()
        return (z - mean.to(z)) / std.to(z)

    def denormalise(self, x: Tensor) -> Tensor:
        mean, std = self.stats()
        return x * std.to(x) + mean.to(x)

    # -- conditioning -----------------------------------------------------------------------
    def check_text(self, embeds: Tensor, tokens: Tensor, mask: Tensor) -> None:
        """A clear error for caption encodings from another CLIP or of the wrong shape."""
        cfg = self.config
        b = embeds.shape[0] if embeds.ndim == 2 else -1
        want = ((b, cfg.embed_dim), (b, cfg.context_length, cfg.text_width), (b, cfg.context_length))
        got = (tuple(embeds.shape), tuple(tokens.shape), tuple(mask.shape))
        if b < 1 or got != want:
            raise ConfigError(f"caption encoding shapes {got} do not fit this prior, which expects "
                              f"embeds [B, {cfg.embed_dim}], tokens [B, {cfg.context_length}, {cfg.text_width}], "
                              f"mask [B, {cfg.context_length}] (a different CLIP?)")

    def null_condition(self, batch: int) -> dict[str, Tensor]:
        """The learned null caption, for the unconditional branch of classifier-free guidance."""
        length = self.config.context_length
        if self.config.null_caption == "empty_caption":
            mask = self.null_mask.expand(batch, -1)
        else:
            mask = torch.ones(batch, length, dtype=torch.bool, device=self.null_tokens.device)
        return {"text_embeds": self.null_text_embed.expand(batch, -1), "tokens": self.null_tokens.expand(batch, -1, -1),
                "mask": mask}

    def forward(self, x: Tensor, t: Tensor, text_embeds: Tensor, tokens: Tensor, mask: Tensor,
                drop: Tensor | None = None) -> Tensor:
        """`drop` [B] bool replaces those rows' caption by the null (training-time guidance dropout);
        the null parameters take part in every forward so DDP sees them used."""
        if drop is not None:
            null = self.null_condition(x.shape[0])
            text_embeds = torch.where(drop[:, None], null["text_embeds"].to(text_embeds.dtype), text_embeds)
            tokens = torch.where(drop[:, None, None], null["tokens"].to(tokens.dtype), tokens)
            mask = torch.where(drop[:, None], null["mask"], mask.bool())
        # bf16 for an inference copy (core.precision); the output is float32 either way. Not `self.prior.dtype`,
        # which walks every module at every step
        dtype = self.null_text_embed.dtype
        # diffusers applies its causal mask only together with a text mask: always pass one.
        return self.prior(x.to(dtype), t, proj_embedding=text_embeds.to(dtype), encoder_hidden_states=tokens.to(dtype),
                          attention_mask=mask.bool(), return_dict=False)[0].float()


def condition_dropout(batch: int, rate: float, device: torch.device | str = "cpu") -> Tensor:
    """Which rows lose their caption; draws from the global RNG (the training loop seeds it per step)."""
    return torch.rand(batch, device=device) < rate


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
