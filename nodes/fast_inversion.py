"""Fast Inversion node: negative-prompt inversion or Direct Inversion instead of null-text optimisation."""

from __future__ import annotations

import torch

import comfy.model_management
from comfy_api.latest import io

from ..core.ddim import ddim_sample
from ..core.fast_inversion import direct_inversion_offsets, negative_prompt_embeddings
from ..core.values import Inversion, NullEmbeddings
from ..host.errors import NodeInputError
from ..host.families import family_of
from ..host.unet import load_model
from . import types
from .common import MODEL_FIX, check_finite, check_guidance, checked_source, step_progress

NODE = types.display_name("Fast Inversion")
METHODS = ["negative-prompt", "direct-inversion"]


def run_fast_inversion(model, source, null, inversion: Inversion, method: str, guidance: float,
                       node: str = NODE, batch_pairs: bool = True) -> tuple[NullEmbeddings, torch.Tensor]:
    """Per-step values without optimisation; returns them and the reconstruction latent (model space).

    ``batch_pairs``: Direct Inversion evaluates the unconditional and the conditional prediction of a step in one
    batch-2 call (True, default: the reference's batching, faster on a GPU and on the CPU too, 0.81x on 2 CPU cores,
    ``bench/README.md``) or in two batch-1 calls (False). The offsets agree to float32 rounding either way."""
    cond = checked_source(model, inversion, source, node)
    family = family_of(model, node)
    if method not in METHODS:
        raise NodeInputError(node, "method", f"unknown method '{method}'.", f"choose one of {', '.join(METHODS)}.")
    check_guidance(guidance, node, "use the guidance you will edit with (7.5; Flux 1).", family)
    load_model(model)
    schedule = inversion.schedule
    unet = family.unet(model, schedule)
    on_step = step_progress(schedule.steps)
    offload = comfy.model_management.intermediate_device()
    trajectory = inversion.latents.to(unet.device)
    with torch.no_grad():
        if method == "negative-prompt":
            embeddings = negative_prompt_embeddings(cond, schedule.steps)
            final = ddim_sample(lambda x, t, c: unet.eps(x, t, c, 0), schedule, trajectory[-1], cond, on_step=on_step)
            offsets = None
        else:
            null_emb = family.text_condition(model, null, node, "null")
            embeddings = null_emb.detach().to(torch.float32).unsqueeze(0).repeat(schedule.steps, 1, 1, 1)
            offsets = direct_inversion_offsets(lambda x, t, c: unet.eps(x, t, c, 0), schedule, trajectory, cond,
                                               null_emb, guidance, on_step, eps_uncond_fn=lambda x, t, c: unet.eps(x, t, c, 1),
                                               eps_pair_fn=unet.eps_pair if batch_pairs else None)
            final = trajectory[0]  # the source row follows the trajectory exactly, by construction
    check_finite(final, node, "model", "the model returned NaN or infinite values", MODEL_FIX)
    if offsets is not None:
        check_finite(offsets, node, "model", "the model returned NaN or infinite values", MODEL_FIX)
    value = NullEmbeddings(
        embeddings=embeddings.to(offload, torch.float32),
        inversion_fingerprint=inversion.fingerprint,
        guidance=guidance,
        method=method,
        latent_offsets=None if offsets is None else offsets.to(offload, torch.float32),
    )
    return value, final.detach().to(offload, torch.float32)


class FastInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NTP_FastInversion",
            display_name=NODE,
            **types.search_aliases('inversion', 'direct inversion', 'negative prompt inversion', 'pnp inversion'),
            category=f"{types.CATEGORY}/inversion",
            description="A fast replacement for Null-Text Optimize with the same output: negative-prompt inversion "
                        "(the source prompt as the null text; no extra UNet passes for the embeddings) or Direct "
                        "Inversion (per-step latent offsets on the source row; 2 UNet evaluations per step, in one batch-2 call). Edited Sample "
                        "works unchanged.",
            inputs=[
                io.Model.Input("model", tooltip="The same model used for DDIM Invert."),
                io.Conditioning.Input("source", tooltip="The same source prompt CONDITIONING used for DDIM Invert."),
                io.Conditioning.Input("null", tooltip="CLIP Text Encode of \"\" (used by direct-inversion; ignored by negative-prompt)."),
                types.Inversion.Input("inversion", tooltip="The 'inversion' output of DDIM Invert."),
                io.Combo.Input("method", options=METHODS, default="direct-inversion", tooltip="negative-prompt: fastest, slightly worse reconstruction. direct-inversion: exact reconstruction of the source row, edits as good as null-text on PIE-Bench."),
                io.Float.Input("guidance", default=7.5, min=0.0, max=30.0, step=0.1, round=0.01, tooltip="The guidance you will edit with (SD 7.5, SD3.5 4.5, Qwen-Image 4, Chroma 3.5; Flux-dev 1: it has no unconditional branch). Direct Inversion's offsets are computed for it."),
            ],
            outputs=[
                types.NullEmbeddings.Output("null_embeddings", display_name="null_embeddings", tooltip="Per-step values for Edited Sample (same type as Null-Text Optimize's)."),
                io.Latent.Output("reconstruction", display_name="reconstruction", tooltip="The reconstruction these values give (VAE Decode it to check)."),
            ],
        )

    @classmethod
    def execute(cls, model, source, null, inversion, method, guidance) -> io.NodeOutput:
        value, final = run_fast_inversion(model, source, null, inversion, method, guidance)
        return io.NodeOutput(value, {"samples": model.model.process_latent_out(final)})
