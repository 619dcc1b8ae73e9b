"""The decoder U-Net's attention (image tokens attending to themselves and to the conditioning tokens).

The same computation as diffusers' `AttnAddedKVProcessor2_0`, except that on the CPU a bf16 query, key and
value are attended to in fp32: torch's CPU flash attention is slower in bf16 than in fp32 (forward and,
far more, backward; docs/experiments/speed.md), and the projections around it keep their bf16 matmuls;
and the projections get contiguous tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnAddedKVProcessor2_0
from torch import Tensor


def attend(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None) -> Tensor:
    """Scaled dot-product attention, in fp32 for reduced-precision tensors on the CPU."""
    if query.device.type != "cpu" or query.dtype == torch.float32:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    mask = None if mask is None else mask.float()
    with torch.autocast("cpu", enabled=False):  # autocast would cast them back to bf16
        out = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=mask)
    return out.to(query.dtype)


class AddedKVAttention(AttnAddedKVProcessor2_0):
    def __call__(self, attn: Attention, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, *args, **kwargs) -> Tensor:
        residual = hidden_states
        hidden_states = hidden_states.view(hidden_states.shape[0], hidden_states.shape[1], -1).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size, out_dim=4)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        # contiguous tokens: a strided [B, N, C] view sends bf16 linears to a batched matmul that copies the
        # weight once per sample
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2).contiguous()

        query = attn.head_to_batch_dim(attn.to_q(hidden_states), out_dim=4)
        key = attn.head_to_batch_dim(attn.add_k_proj(encoder_hidden_states), out_dim=4)
        value = attn.head_to_batch_dim(attn.add_v_proj(encoder_hidden_states), out_dim=4)
        if not attn.only_cross_attention:
            key = torch.cat([key, attn.head_to_batch_dim(attn.to_k(hidden_states), out_dim=4)], dim=2)
            value = torch.cat([value, attn.head_to_batch_dim(attn.to_v(hidden_states), out_dim=4)], dim=2)

        hidden_states = attend(query, key, value, attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, residual.shape[1])
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        # diffusers' layout (channels-last after the reshape), kept: the residual's layout was no faster in bf16
        # and moved a Karlo decoder's samples off diffusers' own by far more than rounding
        return hidden_states.transpose(-1, -2).reshape(residual.shape) + residual
