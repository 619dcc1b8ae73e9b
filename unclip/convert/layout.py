"""What both directions of the conversion share: diffusers' UnCLIPPipeline folder layout, its sampling
defaults, the scheduler ↔ NoiseConfig mapping, and the check that two diffusers model configs agree."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.diffusion import NoiseConfig
from core.errors import CheckpointError, ConfigError

PIPELINE = "UnCLIPPipeline"
COMPONENTS = ("text_encoder", "tokenizer", "prior", "text_proj", "decoder", "super_res_first", "super_res_last",
              "prior_scheduler", "decoder_scheduler", "super_res_scheduler")
STAGE_OF = {"prior": "prior", "decoder": "decoder", "super_res": "upsampler1"}
# Keys of a U-Net config that change nothing when the network has no attention layers.
UNUSED_WITHOUT_ATTENTION = ("attention_head_dim", "attn_norm_num_groups")


class LayoutError(ConfigError):
    """A part one layout has and the other cannot take; the message names the part."""


@contextmanager
def part(name: str) -> Iterator[None]:
    """Errors of the configs built for one part, as a LayoutError that names the part."""
    try:
        yield
    except ValidationError as err:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in err.errors())
        raise LayoutError(f"{name}: cannot be mapped onto this project's configs: {details}") from None
    except LayoutError:
        raise
    except ConfigError as err:
        raise LayoutError(f"{name}: {err}") from None


def check_pipeline_folder(folder: Path) -> None:
    """A clear error unless `folder` is an UnCLIPPipeline as `save_pretrained` writes it."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder} does not exist")
    index = folder / "model_index.json"
    if not index.is_file():
        raise CheckpointError(f"{folder} is not a diffusers pipeline folder (no model_index.json)")
    try:
        kind = json.loads(index.read_text()).get("_class_name")
    except ValueError as err:
        raise CheckpointError(f"{index} is not valid JSON ({err})") from None
    if kind != PIPELINE:
        hint = "; give it to --image-encoder" if kind == "UnCLIPImageVariationPipeline" else ""
        raise LayoutError(f"{folder} holds a diffusers {kind}, not an {PIPELINE}{hint}")
    missing = [name for name in COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise CheckpointError(f"{folder}: the {PIPELINE} lacks {', '.join(missing)}/")


def pipeline_defaults() -> dict[str, dict[str, Any]]:
    """The sampling defaults of diffusers' UnCLIPPipeline (Karlo's 25 / 25 / 7 steps, guidance 4 / 8)."""
    from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

    params = {k: v.default for k, v in inspect.signature(UnCLIPPipeline.__call__).parameters.items()}
    return {"prior": {"steps": params["prior_num_inference_steps"], "guidance": params["prior_guidance_scale"]},
            "decoder": {"steps": params["decoder_num_inference_steps"], "guidance": params["decoder_guidance_scale"]},
            "upsampler1": {"steps": params["super_res_num_inference_steps"]}}


def noise_from_scheduler(config: Mapping[str, Any]) -> NoiseConfig:
    """The noise process of an UnCLIPScheduler (always the cosine schedule)."""
    return NoiseConfig(schedule="cosine", prediction=config["prediction_type"], train_steps=config["num_train_timesteps"],
                       clip_x0=config["clip_sample_range"] if config["clip_sample"] else None)


def scheduler_for(noise: NoiseConfig, learned_variance: bool, part: str):
    """The UnCLIPScheduler that samples a stage with this noise process (LayoutError where none can)."""
    from diffusers import UnCLIPScheduler

    unsupported = {"a linear schedule": noise.schedule != "cosine", "v-prediction": noise.prediction == "v_prediction",
                   "zero terminal SNR": noise.zero_terminal_snr, f"snr_shift {noise.snr_shift}": noise.snr_shift != 1.0}
    wrong = [name for name, bad in unsupported.items() if bad]
    if wrong:
        raise LayoutError(f"{part}: {', '.join(wrong)}; diffusers' UnCLIPScheduler has the cosine schedule with "
                          "epsilon or sample prediction only")
    return UnCLIPScheduler(num_train_timesteps=noise.train_steps, prediction_type=noise.prediction,
                           variance_type="learned_range" if learned_variance else "fixed_small_log",
                           clip_sample=noise.clip_x0 is not None, clip_sample_range=noise.clip_x0 or 1.0)


def check_same_config(part: str, ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> None:
    """LayoutError naming every setting of diffusers' `theirs` that the network built here (`ours`) lacks."""
    keys = {k for k in (*ours, *theirs) if not k.startswith("_")}
    if not theirs.get("add_attention", True) and not ours.get("add_attention", True):
        keys -= set(UNUSED_WITHOUT_ATTENTION)
    differing = [f"{k}={_plain(theirs.get(k))} (ours: {_plain(ours.get(k))})" for k in sorted(keys)
                 if _plain(theirs.get(k)) != _plain(ours.get(k))]
    if differing:
        raise LayoutError(f"{part}: cannot be mapped onto this project's network: {'; '.join(differing)}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value
