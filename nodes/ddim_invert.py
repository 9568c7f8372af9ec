"""DDIM Invert node: the pivot trajectory z_0 ... z_T of an image latent."""

from __future__ import annotations

import torch

import comfy.model_management
from comfy_api.latest import io

from ..core.ddim import ddim_invert
from ..core.values import Inversion
from ..host.errors import NodeInputError
from ..host.families import family_of
from ..host.flow_model import with_model_frame_axis
from ..host.model_fingerprint import model_fingerprint
from ..host.unet import load_model
from . import types
from .common import MODEL_FIX, check_finite, interrupt_check, single_latent, step_progress

NODE = types.display_name("DDIM Invert")


def run_inversion(model, source, latent: dict, steps: int, node: str = NODE) -> Inversion:
    """Invert one latent with the source prompt at guidance 1 (reference semantics; flow models: the Euler ODE of
    the host's sigmas). ``steps`` 0: the family's usual step count."""
    family = family_of(model, node)
    samples = with_model_frame_axis(model, single_latent(latent, node, channels=family.latent_channels))
    if steps == 0:
        steps = family.default_steps
    if steps < 1 or steps > 1000:
        raise NodeInputError(node, "steps", f"{steps} is out of range.", "use 0 (the model's usual steps) or 1..1000 "
                             "(50 is the reference for SD).")
    emb = family.text_condition(model, source, node, "source")
    load_model(model)
    schedule = family.schedule(model, steps)
    unet = family.unet(model, schedule)
    z0 = model.model.process_latent_in(samples.to(unet.device, torch.float32))
    on_step = step_progress(steps)
    interrupt_check()
    with torch.no_grad():
        trajectory = ddim_invert(lambda x, t, c: unet.eps(x, t, c, 0), schedule, z0, emb, on_step)
    check_finite(trajectory, node, "model", "the model returned NaN or infinite values while inverting", MODEL_FIX)
    offload = comfy.model_management.intermediate_device()
    return Inversion(
        latents=trajectory.to(offload, torch.float32),
        schedule=schedule,
        source_context=emb.detach().to(offload, torch.float32).clone(),
        model_family=family.name_of(model),
        model_fingerprint=model_fingerprint(model),
    )


def noise_latent(model, inversion: Inversion) -> dict:
    """x_T in the host's sampler scaling (feed a sampler with add_noise off and this pack's sigmas)."""
    x_k = inversion.schedule.to_sampler(inversion.x_T, 0)
    return {"samples": model.model.process_latent_out(x_k.to(torch.float32)).to(comfy.model_management.intermediate_device())}


class DDIMInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NTP_DDIMInvert",
            display_name=NODE,
            **types.search_aliases('inversion', 'invert', 'ddim inversion', 'invert image', 'image to noise'),
            category=f"{types.CATEGORY}/inversion",
            description="Runs DDIM (flow models: the Euler ODE) backwards from the image latent to noise with the source prompt (guidance 1; Flux keeps the prompt's FluxGuidance value), "
                        "keeping every latent of the way: the pivot trajectory that Null-Text Optimize and "
                        "Edited Sample follow.",
            inputs=[
                io.Model.Input("model", tooltip="An SD 1.x/2.x, SDXL, SD3/SD3.5, Qwen-Image, Flux.1-dev or Chroma model (LoRA and other model patches are honoured)."),
                io.Conditioning.Input("source", tooltip="The source prompt: a caption of the image (CLIP Text Encode), e.g. 'a cat sitting on a table'."),
                io.Latent.Input("latent", tooltip="The image latent from VAE Encode with the model's VAE (one image; a multiple of 8 px, 16 px for SD3, Qwen-Image, Flux and Chroma)."),
                io.Int.Input("steps", default=0, min=0, max=1000, tooltip="Inversion steps; 0 = the model's usual count (SD 50 as in the paper, SD3 28, Qwen-Image 30, Flux 28, Chroma 26). Null-Text Optimize and Edited Sample use the same schedule."),
            ],
            outputs=[
                types.Inversion.Output("inversion", display_name="inversion", tooltip="The pivot trajectory z_0..z_T with its schedule, for Null-Text Optimize and Edited Sample."),
                io.Latent.Output("noise_latent", display_name="noise_latent", tooltip="x_T in the host's sampler scaling (for a host sampler with add_noise off and the sigmas output)."),
                io.Sigmas.Output("sigmas", display_name="sigmas", tooltip="The schedule as the host's sigmas (steps + 1 values; for SD ending at alpha-bar[0], not 0)."),
            ],
        )

    @classmethod
    def execute(cls, model, source, latent, steps) -> io.NodeOutput:
        inversion = run_inversion(model, source, latent, steps)
        return io.NodeOutput(inversion, noise_latent(model, inversion), inversion.schedule.sigmas())
