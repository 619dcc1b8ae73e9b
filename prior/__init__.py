"""The diffusion prior: caption (CLIP text embedding + token states) → CLIP image embedding.

    prior.config    PriorConfig, PriorEvalConfig, PRIOR_PRESETS
    prior.model     DiffusionPrior (diffusers PriorTransformer + learned null caption)
    prior.train     train_prior, `python -m prior.train`
    prior.sample    sample_prior (DDIM / DPM-Solver++, guidance, best-of-n)
    prior.evaluate  evaluate_prior, `python -m prior.evaluate`
    prior.io        save_prior, load_prior
"""
