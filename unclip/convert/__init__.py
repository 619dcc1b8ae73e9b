"""Conversion between diffusers' `UnCLIPPipeline` (Karlo's layout) and this project's model folders.

    python -m unclip.convert from-diffusers DIR --out MODELS [--image-encoder DIR] [--register]
    python -m unclip.convert to-diffusers MODELS --out DIR

See docs/karlo.md for the real Karlo weights.
"""
