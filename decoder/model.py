"""The decoder network: a diffusers U-Net conditioned on a CLIP image embedding and a caption.

Conditioning follows GLIDE / DALL·E 2 through diffusers' own `UnCLIPTextProjModel` (so Karlo's
projection weights keep their names and layout): the image embedding (plus, as in Karlo, the text
embedding) is projected and added to the timestep embedding, and projected into `extra_tokens`
context tokens (interleaved: token k = proj[:, k::extra_tokens]) prepended to the projected caption
token states that the U-Net's attention layers read. The network knows nothing about noise
schedules; `decoder.sample` runs the samplers around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnAddedKVProcessor2_0
from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
from torch import Tensor, nn

from core.errors import ConfigError
from core.resnet import use_lean_resnets
from decoder.attention import AddedKVAttention
from decoder.config import DecoderConfig

# The conditioning inputs, as keyword arguments of Decoder.forward and keys of the shards.
CONDITIONS = ("image_embeds", "text_embeds", "text_tokens", "text_mask")


def build_unet(cfg: DecoderConfig, context_dim: int) -> UNet2DConditionModel:
    attention = cfg.level_has_attention()
    u = cfg.unet
    plain_down, plain_up = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if u.resample == "resnet" else (
        "DownBlock2D", "UpBlock2D")
    down = tuple("SimpleCrossAttnDownBlock2D" if a else plain_down for a in attention)
    up = tuple("SimpleCrossAttnUpBlock2D" if a else plain_up for a in reversed(attention))
    unet = UNet2DConditionModel(
        sample_size=cfg.unet_size,
        # per pixel: the noisy image, then the x/y coordinates and the draft where present
        in_channels=(3 + 2 * cfg.coord_channels + 3 * bool(cfg.draft_width)) * cfg.patch_size**2,
        out_channels=cfg.out_channels * cfg.patch_size**2,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=u.block_channels,
        layers_per_block=u.layers_per_block,
        cross_attention_dim=context_dim,
        attention_head_dim=u.head_dim,
        norm_num_groups=u.norm_groups,
        dropout=u.dropout,
        resnet_time_scale_shift="scale_shift",
        class_embed_type="identity",
    )
    unet.set_attn_processor({name: AddedKVAttention() if isinstance(proc, AttnAddedKVProcessor2_0) else proc
                             for name, proc in unet.attn_processors.items()})
    return use_lean_resnets(unet)


def build_text_proj(cfg: DecoderConfig, time_embed_dim: int) -> UnCLIPTextProjModel:
    proj = UnCLIPTextProjModel(
        clip_extra_context_tokens=cfg.extra_tokens,
        clip_embeddings_dim=cfg.embed_dim,
        time_embed_dim=time_embed_dim,
        cross_attention_dim=cfg.unet.context_dim,
    )
    if cfg.text_width != cfg.embed_dim:
        # diffusers assumes caption token states as wide as the embedding (true of Karlo's CLIP-L)
        proj.encoder_hidden_states_proj = nn.Linear(cfg.text_width, cfg.unet.context_dim)
    if not cfg.text_time_embed:
        nn.init.zeros_(proj.embedding_proj.weight)
        nn.init.zeros_(proj.embedding_proj.bias)
        proj.embedding_proj.requires_grad_(False)
    return proj


class Draft(nn.Sequential):
    """An MLP that draws the whole image [B, 3, S, S] from the (scaled) image and text embeddings."""

    def __init__(self, embed_dim: int, width: int, image_size: int, embed_scale: float) -> None:
        super().__init__(nn.Linear(2 * embed_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                         nn.Linear(width, 3 * image_size**2))
        self.image_size, self.embed_scale = image_size, embed_scale

    def forward(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        x = super().forward(torch.cat([image_embeds, text_embeds], 1) * self.embed_scale)
        return x.view(-1, 3, self.image_size, self.image_size)


class Refiner(nn.Module):
    """3×3 convolutions at full resolution, told the timestep by a per-channel bias; the last one
    starts at zero so a new refiner leaves the U-Net's output as it is."""

    def __init__(self, in_channels: int, width: int, layers: int, time_dim: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.time = nn.Linear(time_dim, width)
        self.body = nn.Sequential(*[m for _ in range(layers - 2) for m in (nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))])
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, inputs: Tensor, time_embeds: Tensor) -> Tensor:
        h = self.conv_in(inputs) + self.time(F.silu(time_embeds))[:, :, None, None]
        return self.conv_out(F.silu(self.body(h)))


@dataclass(frozen=True)
class Prepared:
    """Decoder.prepare's result: context tokens [B, extra + L, C], the additive time embedding [B, E], the
    context mask [B, extra + L] and the draft [B, 3, S, S] (None without one)."""

    context: Tensor
    time_embeds: Tensor
    mask: Tensor
    draft: Tensor | None

    @staticmethod
    def cat(parts: list[Prepared]) -> Prepared:
        draft = None if parts[0].draft is None else torch.cat([p.draft for p in parts])
        return Prepared(*(torch.cat([getattr(p, k) for p in parts]) for k in ("context", "time_embeds", "mask")), draft)


class Decoder(nn.Module):
    """`forward(x, t, image_embeds, text_embeds, text_tokens, text_mask)` → the prediction its noise config
    names (ε, x0 or v): 3 channels, or 6 with a learned variance (the prediction first).

    At its core a plain conditioned U-Net (`conditioned_unet`: GLIDE's conditioning through `text_proj`).
    The extras are optional steps around it, each off by default: `unet_inputs` widens the U-Net's input
    (coordinate channels, the draft MLP's picture, 2×2 patches) and `refine` corrects its output (a
    full-resolution refiner, the draft as a residual). Which of them a dataset's preset turns on, and why:
    docs/experiments/decoder.md."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        if cfg.embed_dim is None or cfg.text_width is None:
            raise ConfigError("DecoderConfig needs embed_dim and text_width (use cfg.for_clip(...) with the CLIP's dimensions)")
        self.cfg = cfg
        self.unet = build_unet(cfg, cfg.unet.context_dim)
        self.text_proj = build_text_proj(cfg, time_embed_dim=cfg.unet.time_embed_dim)
        self.embed_scale = math.sqrt(cfg.embed_dim) if cfg.scale_embeds else 1.0
        self.draft = Draft(cfg.embed_dim, cfg.draft_width, cfg.image_size, self.embed_scale) if cfg.draft_width else None
        self.refiner = None
        if cfg.refine_width:
            # its inputs: the noisy image, the U-Net's output and the draft where there is one
            self.refiner = Refiner(6 + 3 * bool(cfg.draft_width), cfg.refine_width, cfg.refine_layers,
                                   time_dim=cfg.unet.time_embed_dim)
        side = torch.linspace(-1, 1, cfg.image_size)
        self.register_buffer("coords", torch.stack(torch.meshgrid(side, side, indexing="xy"))[None], persistent=False)
        if cfg.null_text == "empty_caption":
            length = cfg.context_length
            self.register_buffer("empty_text_embeds", torch.zeros(cfg.embed_dim))
            self.register_buffer("empty_text_tokens", torch.zeros(length, cfg.text_width))
            self.register_buffer("empty_text_mask", torch.zeros(length, dtype=torch.bool))

    @torch.no_grad()
    def set_empty_caption(self, embeds: Tensor, tokens: Tensor, mask: Tensor) -> None:
        """Store CLIP's encoding of "" ([D], [L, W], [L]) as the caption of the unconditional branch."""
        if self.cfg.null_text != "empty_caption":
            raise ConfigError("this decoder drops captions to zeros (null_text='zeros'); it stores no empty caption")
        self.empty_text_embeds.copy_(embeds)
        self.empty_text_tokens.copy_(tokens)
        self.empty_text_mask.copy_(mask.bool())

    @property
    def null_image_embed(self) -> Tensor:
        """The learned embedding that stands for "no image embedding" (unit scale, like the inputs)."""
        return self.text_proj.learned_classifier_free_guidance_embeddings

    def condition(self, image_embeds: Tensor, text_embeds: Tensor, text_tokens: Tensor,
                  text_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(context tokens [B, extra + L, C], additive time embedding [B, E], context mask [B, extra + L])."""
        self._check_shapes(image_embeds, text_embeds, text_tokens, text_mask)
        context, time_embeds = self.text_proj(
            image_embeddings=image_embeds * self.embed_scale,
            prompt_embeds=text_embeds * self.embed_scale,
            text_encoder_hidden_states=text_tokens,
            do_classifier_free_guidance=False,
        )
        mask = torch.cat([text_mask.new_ones(text_mask.shape[0], self.cfg.extra_tokens), text_mask.bool()], dim=1)
        return context, time_embeds, mask

    def prepare(self, image_embeds: Tensor, text_embeds: Tensor, text_tokens: Tensor, text_mask: Tensor) -> Prepared:
        """What the network derives from the conditions alone, in its own dtype: computed once per sampling
        run instead of at every step."""
        dtype = self.unet.dtype
        image_embeds, text_embeds, text_tokens = (v.to(dtype) for v in (image_embeds, text_embeds, text_tokens))
        context, time_embeds, mask = self.condition(image_embeds, text_embeds, text_tokens, text_mask)
        draft = self.draw_draft(image_embeds, text_embeds).detach() if self.draft is not None else None
        return Prepared(context, time_embeds, mask, draft)

    def forward(self, x: Tensor, t: Tensor, image_embeds: Tensor | None = None, text_embeds: Tensor | None = None,
                text_tokens: Tensor | None = None, text_mask: Tensor | None = None, drop_image: Tensor | None = None,
                drop_text: Tensor | None = None, prepared: Prepared | None = None) -> Tensor:
        """Model output (float32) for noisy images x [B, 3, S, S] at timesteps t [B], from the conditions or
        from `prepare`'s result for them; `drop_image` / `drop_text` (bool [B], training) replace those rows'
        conditions as guidance dropout does."""
        if prepared is None:
            if drop_image is not None or drop_text is not None:
                no = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
                dropped = self.drop_conditions(image_embeds, text_embeds, text_tokens, text_mask,
                                               no if drop_image is None else drop_image,
                                               no if drop_text is None else drop_text)
                image_embeds, text_embeds, text_tokens, text_mask = (dropped[k] for k in CONDITIONS)
            prepared = self.prepare(image_embeds, text_embeds, text_tokens, text_mask)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        x = x.to(self.unet.dtype)
        out = self.conditioned_unet(self.unet_inputs(x, prepared.draft), t, prepared)
        return self.refine(x, out, t, prepared.draft).float()

    def unet_inputs(self, x: Tensor, draft: Tensor | None) -> Tensor:
        """The noisy images, then the coordinate channels and the draft where the config has them, in patches."""
        parts = [x]
        if self.cfg.coord_channels:
            parts.append(self.coords.to(x.dtype).expand(x.shape[0], -1, -1, -1))
        inputs = F.pixel_unshuffle(torch.cat(parts, 1), self.cfg.patch_size)
        if draft is not None:
            inputs = torch.cat([inputs, F.pixel_unshuffle(draft.to(inputs.dtype), self.cfg.patch_size)], 1)
        return inputs

    def conditioned_unet(self, inputs: Tensor, t: Tensor, prepared: Prepared) -> Tensor:
        """The U-Net on its (patched) inputs under the prepared conditions, back at full resolution."""
        out = self.unet(inputs, t, encoder_hidden_states=prepared.context, class_labels=prepared.time_embeds,
                        attention_mask=prepared.mask, return_dict=False)[0]
        return F.pixel_shuffle(out, self.cfg.patch_size)

    def refine(self, x: Tensor, out: Tensor, t: Tensor, draft: Tensor | None) -> Tensor:
        """The refiner's correction from the noisy image, the U-Net's output and the draft, then the draft added
        back when the U-Net predicts the correction to it (draft_residual); each only where configured."""
        if self.refiner is not None:
            u = self.unet
            step_embeds = u.time_embedding(u.time_proj(t).to(out.dtype))
            extra = [draft.to(out.dtype)] if draft is not None else []
            out = out + self.refiner(torch.cat([x.to(out.dtype), out, *extra], 1), step_embeds)
        return out + draft.to(out.dtype) if self.cfg.draft_residual else out

    def draw_draft(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        """The draft MLP's image [B, 3, S, S] for these (already dropped-out) embeddings."""
        return self.draft(image_embeds, text_embeds)

    def unconditional(self, batch: int, tokens: int, device: torch.device | str,
                      dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """The conditioning of the unconditional branch: null image embedding, caption dropped."""
        d, w = self.cfg.embed_dim, self.cfg.text_width
        null = self.null_image_embed.detach().to(device, dtype) / self.embed_scale
        if self.cfg.null_text == "empty_caption":  # CLIP's "" has the CLIP's own token count
            return {"image_embeds": null.expand(batch, d), **self._empty_caption(batch, device, dtype)}
        return {
            "image_embeds": null.expand(batch, d),
            "text_embeds": torch.zeros(batch, d, device=device, dtype=dtype),
            "text_tokens": torch.zeros(batch, tokens, w, device=device, dtype=dtype),
            "text_mask": torch.zeros(batch, tokens, dtype=torch.bool, device=device),
        }

    def _empty_caption(self, batch: int, device, dtype) -> dict[str, Tensor]:
        return {"text_embeds": self.empty_text_embeds.to(device, dtype).expand(batch, -1),
                "text_tokens": self.empty_text_tokens.to(device, dtype).expand(batch, -1, -1),
                "text_mask": self.empty_text_mask.to(device).expand(batch, -1)}

    def drop_conditions(self, image_embeds: Tensor, text_embeds: Tensor, text_tokens: Tensor, text_mask: Tensor,
                        drop_image: Tensor, drop_text: Tensor) -> dict[str, Tensor]:
        """Guidance dropout: rows of `drop_image` get the learned null embedding (which stays trainable),
        rows of `drop_text` lose their caption (zero text embedding, no caption tokens)."""
        null = (self.null_image_embed / self.embed_scale).to(image_embeds.dtype).expand_as(image_embeds)
        image = torch.where(drop_image[:, None], null, image_embeds)
        if self.cfg.null_text == "empty_caption":
            empty = self._empty_caption(len(drop_text), text_embeds.device, text_embeds.dtype)
            return {"image_embeds": image,
                    "text_embeds": torch.where(drop_text[:, None], empty["text_embeds"], text_embeds),
                    "text_tokens": torch.where(drop_text[:, None, None], empty["text_tokens"], text_tokens),
                    "text_mask": torch.where(drop_text[:, None], empty["text_mask"], text_mask.bool())}
        keep_text = (~drop_text).to(text_embeds.dtype)
        return {
            "image_embeds": image,
            "text_embeds": text_embeds * keep_text[:, None],
            "text_tokens": text_tokens * keep_text[:, None, None],
            "text_mask": text_mask.bool() & ~drop_text[:, None],
        }

    def _check_shapes(self, image_embeds: Tensor, text_embeds: Tensor, text_tokens: Tensor, text_mask: Tensor) -> None:
        d, w = self.cfg.embed_dim, self.cfg.text_width
        b = image_embeds.shape[0]
        expected = {"image_embeds": (b, d), "text_embeds": (b, d), "text_tokens": (b, text_tokens.shape[1], w),
                    "text_mask": (b, text_tokens.shape[1])}
        given = {"image_embeds": image_embeds, "text_embeds": text_embeds, "text_tokens": text_tokens,
                 "text_mask": text_mask}
        for name, want in expected.items():
            if given[name].ndim != len(want) or tuple(given[name].shape) != want:
                raise ConfigError(f"decoder input {name} has shape {tuple(given[name].shape)}, expected {want} "
                                  f"(embed_dim {d}, text_width {w})")
