"""Tiny random models of every stage, saved the way training saves them, for tests and smoke runs.

    root = build_tiny_models(tmp / "models", make_clip=tiny_clips.make_open_clip)
    pipe = UnclipPipeline.from_models_dir(root)

Sizes: CLIP from `make_clip` (embed 32, context 16 for tests/tiny_clips), decoder 16 px, upsampler 1
16 → 32 px, upsampler 2 32 → 64 px; a few thousand parameters each, a few noise steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from clip.spec import ClipSpec
from core.checkpoint import save_model_folder
from core.diffusion import NoiseConfig

TRAIN_STEPS = 50


def build_tiny_models(root: str | Path, make_clip: Callable[[Path], ClipSpec], seed: int = 0,
                      upsamplers: int = 2, decoder_spec: ClipSpec | None = None) -> Path:
    """clip/ prior/ decoder/ upsampler1/ upsampler2/ under `root`; `decoder_spec` pretends the decoder
    was trained with another CLIP (for mismatch tests)."""
    root = Path(root)
    spec = make_clip(root / "clip")
    spec.save(root / "clip")
    save_tiny_prior(root / "prior", spec, seed)
    save_tiny_decoder(root / "decoder", decoder_spec or spec, seed)
    sizes = [(16, 32), (32, 64)][:upsamplers]
    for stage, (low, high) in enumerate(sizes, start=1):
        save_tiny_upsampler(root / f"upsampler{stage}", stage, low, high, seed)
    return root


def save_tiny_prior(folder: Path, spec: ClipSpec, seed: int = 0) -> Path:
    from prior.config import PriorConfig
    from prior.io import save_prior
    from prior.model import DiffusionPrior

    torch.manual_seed(seed)
    cfg = PriorConfig(heads=2, head_dim=16, layers=1, noise=NoiseConfig(prediction="sample", train_steps=TRAIN_STEPS))
    prior = DiffusionPrior(cfg.for_clip(spec.embed_dim, spec.context_length, spec.text_width), clip_spec=spec)
    prior.set_stats(torch.zeros(spec.embed_dim), torch.full((spec.embed_dim,), 0.2))
    return save_prior(folder, prior.eval(), spec)


def save_tiny_decoder(folder: Path, spec: ClipSpec, seed: int = 0) -> Path:
    from decoder.config import DecoderConfig, UNetConfig
    from decoder.model import Decoder

    torch.manual_seed(seed)
    cfg = DecoderConfig(image_size=16, noise=NoiseConfig(prediction="v_prediction", train_steps=TRAIN_STEPS),
                        unet=UNetConfig(channels=16, channel_mult=(1, 2), layers_per_block=1, attention_resolutions=(8,),
                                        head_dim=16, context_dim=32, norm_groups=8, dropout=0.0))
    decoder = Decoder(cfg.for_clip(spec.embed_dim, spec.text_width)).eval()
    try:
        from decoder.io import save_decoder
    except ImportError:
        return save_model_folder(folder, decoder, {"decoder_config": decoder.cfg, "clip_spec": spec})
    return save_decoder(folder, decoder, spec)


def save_tiny_upsampler(folder: Path, stage: int, low: int, high: int, seed: int = 0) -> Path:
    from upsamplers.config import UpsamplerConfig, UpsamplerModelConfig
    from upsamplers.io import save_upsampler
    from upsamplers.model import Upsampler

    torch.manual_seed(seed + stage)
    cfg = UpsamplerConfig(stage=stage, low_res=low, high_res=high, sample_steps=2,
                          noise=NoiseConfig(schedule="cosine" if stage == 1 else "linear", prediction="sample",
                                            train_steps=TRAIN_STEPS),
                          model=UpsamplerModelConfig(channels=(8, 16), layers_per_block=1))
    return save_upsampler(folder, Upsampler(cfg).eval())


_shared: dict[str, Path] = {}


def shared_tiny_models(factory, make_clip: Callable[[Path], ClipSpec]) -> Path:
    """The test session's tiny models (pytest's tmp_path_factory), built on first use."""
    if "models" not in _shared:
        _shared["models"] = build_tiny_models(factory.mktemp("unclip_models") / "models", make_clip)
    return _shared["models"]
