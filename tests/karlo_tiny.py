"""A tiny random diffusers `UnCLIPPipeline` in Karlo's layout, saved as `save_pretrained` writes it, for tests.

The components follow diffusers' own test components (tests/pipelines/unclip/test_unclip.py,
`get_dummy_components`), with Karlo's choices where the two differ: super-resolution U-Nets without
attention and with additive time embeddings, as diffusers' Karlo conversion script builds them. The
tokenizer is CLIP's real BPE vocabulary, built offline from open_clip's copy (tiny_clips.clip_tokenizer).

    folder = save_tiny_karlo(tmp / "karlo")                  # text_encoder, tokenizer, prior, ... , schedulers
    vision = save_tiny_image_encoder(tmp / "image_encoder")  # a CLIPVisionModelWithProjection for variations
"""

from __future__ import annotations

from pathlib import Path

import torch

TEXT_WIDTH = 32  # the CLIP's embedding and token width (Karlo's CLIP-L: 768 both)
CONTEXT = 77
IMAGE_SIZE = 32  # the decoder's side; the super-resolution models make 64
CLIP_IMAGE_SIZE = 32


def text_encoder(seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=TEXT_WIDTH, projection_dim=TEXT_WIDTH, intermediate_size=37,
                            num_hidden_layers=2, num_attention_heads=4, layer_norm_eps=1e-5, vocab_size=49408,
                            max_position_embeddings=CONTEXT)
    return CLIPTextModelWithProjection(config).eval()


def tokenizer():
    from tiny_clips import clip_tokenizer

    tok = clip_tokenizer()
    tok.model_max_length = CONTEXT
    return tok


def prior(seed: int = 0):
    from diffusers import PriorTransformer

    torch.manual_seed(seed)
    model = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=TEXT_WIDTH, num_layers=1)
    # diffusers initialises the statistics to zero, so that an untrained prior's output is all zeros
    with torch.no_grad():
        model.clip_mean.copy_(0.1 * torch.randn_like(model.clip_mean))
        model.clip_std.copy_(0.5 + torch.rand_like(model.clip_std))
    return model.eval()


def text_proj(seed: int = 0):
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    torch.manual_seed(seed)
    model = UnCLIPTextProjModel(clip_embeddings_dim=TEXT_WIDTH, time_embed_dim=128, cross_attention_dim=100)
    with torch.no_grad():  # zero-initialised in diffusers: make the null embedding differ from a zero one
        model.learned_classifier_free_guidance_embeddings.normal_()
    return model.eval()


def decoder(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE, in_channels=3, out_channels=6,  # mean and learned variance
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        cross_attention_dim=100, attention_head_dim=4, resnet_time_scale_shift="scale_shift",
        class_embed_type="identity").eval()


def super_res(seed: int):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=2 * IMAGE_SIZE, layers_per_block=1, in_channels=6, out_channels=3,
                       down_block_types=("ResnetDownsampleBlock2D",) * 2, up_block_types=("ResnetUpsampleBlock2D",) * 2,
                       block_out_channels=(32, 64), add_attention=False).eval()


def schedulers() -> dict:
    from diffusers import UnCLIPScheduler

    return {
        "prior_scheduler": UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                           num_train_timesteps=1000, clip_sample_range=5.0),
        "decoder_scheduler": UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon",
                                             num_train_timesteps=1000),
        "super_res_scheduler": UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon",
                                               num_train_timesteps=1000),
    }


def tiny_pipeline(seed: int = 0):
    from diffusers import UnCLIPPipeline

    return UnCLIPPipeline(prior=prior(seed), decoder=decoder(seed), text_encoder=text_encoder(seed),
                          tokenizer=tokenizer(), text_proj=text_proj(seed), super_res_first=super_res(seed + 1),
                          super_res_last=super_res(seed + 2), **schedulers())


def save_tiny_karlo(folder: str | Path, seed: int = 0) -> Path:
    folder = Path(folder)
    tiny_pipeline(seed).save_pretrained(folder)
    return folder


def save_tiny_image_encoder(folder: str | Path, seed: int = 0) -> Path:
    """A CLIPVisionModelWithProjection with its image processor, as the image-variations pipeline keeps it."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed + 10)
    config = CLIPVisionConfig(hidden_size=TEXT_WIDTH, projection_dim=TEXT_WIDTH, intermediate_size=37,
                              num_hidden_layers=2, num_attention_heads=4, image_size=CLIP_IMAGE_SIZE, patch_size=8)
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder)
    square = {"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE}
    CLIPImageProcessor(size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size=square).save_pretrained(folder)
    return folder
