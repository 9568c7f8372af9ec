"""One inversion + null-text optimisation of the tiny model, shared by the test modules of a session."""

from __future__ import annotations

import torch

from helpers import encode, image_latent

STEPS = 10
GUIDANCE = 7.5
SOURCE = "a cat sitting on a table"
_CACHE: dict = {}


def build_pipeline(tiny_model) -> tuple:
    """(model, clip, source, null, inversion, null_embeddings, final_latent); computed once per session."""
    key = id(tiny_model[0])
    if key not in _CACHE:
        from nulltext_p2p.nodes.ddim_invert import run_inversion
        from nulltext_p2p.nodes.null_text_optimize import run_null_text

        model, clip, vae = tiny_model
        source = encode(clip, SOURCE)
        null = encode(clip, "")
        inv = run_inversion(model, source, image_latent(model), STEPS)
        requires_grad = [p.requires_grad for p in model.model.diffusion_model.parameters()]
        with torch.inference_mode():  # as the host's executor runs nodes
            value, final = run_null_text(model, source, null, inv, GUIDANCE, 10, 1e-5)
        _CACHE[key] = (model, clip, source, null, inv, value, final, requires_grad)
    return _CACHE[key]
