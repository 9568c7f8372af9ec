"""Null-Text Optimize node: per-step unconditional embeddings that make guided DDIM reconstruct the image."""

from __future__ import annotations

import math

import torch

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..core.null_text import NonFiniteLossError, NullTextSettings, optimize_null_embeddings
from ..core.values import Inversion, NullEmbeddings
from ..host.errors import NodeInputError
from ..host.families import family_of
from ..host.unet import load_model
from . import types
from .common import MODEL_FIX, check_finite, check_guidance, checked_source, interrupt_check

NODE = types.display_name("Null-Text Optimize")
#: Where the optimisation of the null embeddings starts (the node's ``null_start``).
NULL_STARTS = ("auto", "null", "source")


def run_null_text(model, source, null, inversion: Inversion, guidance: float, inner_steps: int, epsilon: float,
                  node: str = NODE, memory_saving: bool = False, null_start: str = "auto") -> tuple[NullEmbeddings, torch.Tensor]:
    """Optimise the per-step null embeddings; returns them and the reconstruction latent (model space).

    ``null_start``: what the optimisation starts from: "null" (the 'null' input, the reference), "source" (the
    source prompt's embedding, the negative-prompt-inversion point) or "auto" (the family's choice)."""
    family = family_of(model, node)
    if family.null_text_refusal is not None:
        raise NodeInputError(node, "model", *family.null_text_refusal)
    cond = checked_source(model, inversion, source, node)
    if null_start not in NULL_STARTS:
        raise NodeInputError(node, "null_start", f"unknown value {null_start!r}.", f"choose one of {', '.join(NULL_STARTS)}.")
    start = family.null_start if null_start == "auto" else null_start
    null_emb = family.text_condition(model, null, node, "null")  # checked also where it is not the start
    if start == "source":
        null_emb = cond
    check_finite(null_emb, node, "null", "the null embedding holds NaN or infinite values",
                 "encode the empty prompt \"\" with this checkpoint's CLIP (CLIP Text Encode).")
    check_guidance(guidance, node, "use the guidance you will edit with (7.5 in the paper).")
    if inner_steps < 0:
        raise NodeInputError(node, "inner_steps", f"{inner_steps} is negative.", "use 10 (the paper) or fewer for speed.")
    load_model(model)
    schedule = inversion.schedule
    unet = family.unet(model, schedule)
    settings = NullTextSettings(guidance=guidance, inner_steps=inner_steps, epsilon=epsilon)
    pbar = comfy.utils.ProgressBar(max(1, schedule.steps * max(inner_steps, 1)))

    def on_iteration(step: int, j: int, stopped: bool) -> None:
        pbar.update(1 + ((inner_steps - j - 1) if stopped else 0))
        interrupt_check()

    interrupt_check()
    with family.gradients(model, memory_saving), torch.inference_mode(False):
        device = unet.device
        trajectory = inversion.latents.to(device).clone()
        try:
            result = optimize_null_embeddings(
                lambda x, t, c: unet.eps(x, t, c, 0), schedule, trajectory, cond.to(device).clone(),
                null_emb.to(device, torch.float32).clone(), settings, on_iteration,
                eps_uncond_fn=lambda x, t, c: unet.eps(x, t, c, 1))
        except NonFiniteLossError as e:
            raise NodeInputError(node, "model", f"the model returned NaN or infinite values: {e} (a NaN loss "
                                 "gives black images).", MODEL_FIX) from None
    check_finite(result.final_latent, node, "model", "the reconstruction came out NaN or infinite", MODEL_FIX)
    offload = comfy.model_management.intermediate_device()
    value = NullEmbeddings(
        embeddings=result.embeddings.detach().to(offload, torch.float32),
        inversion_fingerprint=inversion.fingerprint,
        guidance=guidance,
        method="null-text",
        iterations=list(result.iterations),
        losses=list(result.losses),
    )
    return value, result.final_latent.detach().to(offload, torch.float32)


class NullTextOptimize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NTP_NullTextOptimize",
            display_name=NODE,
            **types.search_aliases('inversion', 'null text optimization', 'optimise', 'optimize', 'real image editing'),
            category=f"{types.CATEGORY}/inversion",
            description="Optimises one unconditional ('null-text') embedding per DDIM step so that guided sampling from "
                        "x_T follows the inversion back to the image (Mokady et al. 2023). Slow: up to "
                        "steps x inner steps UNet forward+backward passes; run it once and edit many times.",
            # An output node: the host then also sends its status ("N inner iterations ...") when its result comes from
            # the cache (ComfyUI 0.33 sends nothing for a cached node that is not an output), so the node always shows
            # the status of the embeddings it passes on. It runs (or is taken from the cache) whenever queued.
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The same model used for DDIM Invert."),
                io.Conditioning.Input("source", tooltip="The same source prompt CONDITIONING used for DDIM Invert."),
                io.Conditioning.Input("null", tooltip="CLIP Text Encode of the empty prompt \"\": the starting null embedding."),
                types.Inversion.Input("inversion", tooltip="The 'inversion' output of DDIM Invert."),
                io.Float.Input("guidance", default=7.5, min=0.0, max=30.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale to reconstruct (and later edit) with. 7.5 in the paper (SD); SD3.5 4.5, Qwen-Image 4, Chroma 3.5 (Flux-dev has no unconditional branch: use Fast Inversion). Edited Sample should use the same."),
                io.Int.Input("inner_steps", default=10, min=0, max=100, tooltip="Adam iterations per DDIM step at most (10 in the paper). Fewer is faster and reconstructs less exactly."),
                io.Float.Input("epsilon", default=1e-5, min=0.0, max=1.0, step=1e-6, round=1e-7, tooltip="Early stop: a step stops when its loss falls below epsilon + step x 2e-5 (1e-5 in the paper). Larger is faster."),
                io.Boolean.Input("memory_saving", default=False, optional=True, tooltip="Gradient checkpointing: far less memory, slower, the same result. Turn it on when the optimisation runs out of GPU memory (SDXL, SD3, Qwen-Image, large images)."),
                io.Combo.Input("null_start", options=list(NULL_STARTS), default="auto", optional=True, tooltip="What the optimisation starts from. null: the 'null' input (the paper). source: the source prompt (negative-prompt inversion's point). auto: null for SD, SDXL and SD3; source for Qwen-Image and Chroma, whose short empty negatives (5 and 1 tokens) cannot reproduce the prompt's prediction (see the help page)."),
            ],
            outputs=[
                types.NullEmbeddings.Output("null_embeddings", display_name="null_embeddings", tooltip="One optimised unconditional embedding per DDIM step, tied to this inversion."),
                io.Latent.Output("reconstruction", display_name="reconstruction", tooltip="The guided reconstruction reached with the optimised embeddings (VAE Decode it to check the inversion)."),
            ],
        )

    @classmethod
    def execute(cls, model, source, null, inversion, guidance, inner_steps, epsilon, memory_saving=False,
                null_start="auto") -> io.NodeOutput:
        value, final = run_null_text(model, source, null, inversion, guidance, inner_steps, epsilon,
                                     memory_saving=bool(memory_saving), null_start=null_start)
        recon = {"samples": model.model.process_latent_out(final)}
        return io.NodeOutput(value, recon, ui={"text": [status_text(value)]})


def status_text(value: NullEmbeddings) -> str:
    """The line shown on the node after a run (losses are finite here: a NaN loss is an error)."""
    losses = [x for x in value.losses if math.isfinite(x)]
    if not losses:
        return f"no optimisation (inner_steps 0): {value.steps} steps with the plain null embedding"
    return (f"{value.total_iterations} inner iterations over {value.steps} steps; "
            f"last loss {losses[-1]:.3g} (mean {sum(losses) / len(losses):.3g})")
