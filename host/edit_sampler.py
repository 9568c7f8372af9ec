"""Sampling from x_T through the host's own sampler machinery (CFGGuider, cond batching, ControlNet, previews).

- ``NullEmbeddingWrapper``: an APPLY_MODEL wrapper that swaps the unconditional rows' context for the
  per-step null embedding (rows read from the host's ``cond_or_uncond``, step derived from the sigma).
- ``ddim_sampler``: a ``KSAMPLER`` function doing deterministic DDIM (eta 0) in sigma space on our schedule,
  with Prompt-to-Prompt local blend after each step, progress/preview callbacks and Cancel.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers

from ..core.schedule import DDIMSchedule
from .compat import SharedOnClone
from .text_condition import unpack

WRAPPER_KEY = "nulltext_p2p_null_embeddings"


class NullEmbeddingWrapper(SharedOnClone):
    """APPLY_MODEL wrapper: unconditional rows get ``embeddings[step]``.

    With ``pooled_dim`` > 0 (SDXL) each embedding is packed (``host.text_condition``): its token rows replace the
    unconditional rows' context and its pooled vector the first ``pooled_dim`` entries of their ADM input ``y``
    (the host lays ``y`` out as [pooled | size embeddings]).
    """

    def __init__(self, embeddings: torch.Tensor, schedule: DDIMSchedule, pooled_dim: int = 0) -> None:
        self.embeddings = embeddings  # [steps, 1, tokens (+1 pooled row), dim], float32 (CPU)
        self.schedule = schedule
        self.pooled_dim = pooled_dim
        self._device_cache: dict = {}

    def _embedding(self, step: int, device, dtype) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        key = (step, str(device), dtype)
        if key not in self._device_cache:
            self._device_cache = {key: unpack(self.embeddings[step].to(device, dtype), self.pooled_dim)}
        return self._device_cache[key]

    def __call__(self, executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        cou = transformer_options.get("cond_or_uncond") or []
        step = self.schedule.step_of_sigma(float(t.reshape(-1)[0])) if len(cou) else None
        if step is not None and 1 in cou and c_crossattn is not None:
            chunk = x.shape[0] // len(cou)
            null, pooled = self._embedding(step, c_crossattn.device, c_crossattn.dtype)
            if null.shape[1] != c_crossattn.shape[1]:
                reps = c_crossattn.shape[1] // null.shape[1]
                null = null.repeat(1, max(reps, 1), 1)[:, : c_crossattn.shape[1]]
            c_crossattn = c_crossattn.clone()
            y = kwargs.get("y")
            if pooled is not None:
                if y is None or y.shape[-1] < self.pooled_dim:
                    raise RuntimeError("the model got no ADM input 'y' for the pooled null vector (is this an SDXL model?)")
                y = y.clone()
            for i, c in enumerate(cou):
                if c == 1:
                    rows = slice(i * chunk, (i + 1) * chunk)
                    c_crossattn[rows] = null.expand(chunk, -1, -1)
                    if pooled is not None:
                        y[rows, : self.pooled_dim] = pooled.to(y.device, y.dtype).expand(chunk, -1)
            if pooled is not None:
                kwargs["y"] = y
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def ddim_sampler(
    after_step: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None,
) -> comfy.samplers.KSAMPLER:
    """A KSAMPLER doing DDIM (eta 0) on the given sigmas; returns the latent in DDPM scaling at the last sigma.

    In the host's k-diffusion scaling the DDIM step is ``denoised + (sigma_next / sigma) (x - denoised)``, which is
    also the Euler step of a flow model (``x + (sigma_next - sigma) (x - denoised) / sigma``); a flow schedule ends at
    sigma 0, where the DDPM rescaling is the identity. ``after_step(x, step)`` (Direct Inversion offsets, local
    blend) may change the sampler's latent after each step. ``extra_options["ntp_start"]`` (the sampler's
    ``extra_options``), when set, is the latent sampling starts from in place of the host's noise-scaled input.
    """

    @torch.no_grad()
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, ntp_start=None):
        extra_args = {} if extra_args is None else extra_args
        if ntp_start is not None:
            x = ntp_start.to(x.device, x.dtype)
        s_in = x.new_ones([x.shape[0]])
        n = len(sigmas) - 1
        for i in range(n):
            comfy.model_management.throw_exception_if_processing_interrupted()
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            denoised = model(x, sigma * s_in, **extra_args)
            x = denoised + (sigma_next / sigma) * (x - denoised)
            if after_step is not None:
                x = after_step(x, i)
            if callback is not None:
                callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        last = float(sigmas[-1])
        return x / math.sqrt(1.0 + last * last)  # k-diffusion -> DDPM scaling (what the VAE decodes)

    return comfy.samplers.KSAMPLER(sample)


def sample_from_inversion(
    patcher,
    x_T: torch.Tensor,
    schedule: DDIMSchedule,
    positive,
    negative,
    guidance: float,
    sampler: comfy.samplers.KSAMPLER,
    callback=None,
    start_in_sampler: bool = False,
) -> torch.Tensor:
    """Run the host sampler from ``x_T`` ([B, C, H, W] model latent space; SD: DDPM-scaled); returns the model-space
    latent where the schedule ends (SD: DDPM-scaled at the final alpha-bar).

    SD: the host's noise scaling with zero noise hands ``x_T`` (k-diffusion scaled) to the sampler as it is. Flow
    models (``start_in_sampler``): their noise scaling ``sigma noise + (1 - sigma) latent`` cannot give a chosen
    latent at sigma 1, so the sampler function is told to start from ``x_T`` itself."""
    sigmas = schedule.sigmas()
    x_k = schedule.to_sampler(x_T, 0)
    base = patcher.model
    latent_image = base.process_latent_out(x_k.to(torch.float32))
    noise = torch.zeros_like(latent_image)
    if start_in_sampler:
        sampler = comfy.samplers.KSAMPLER(sampler.sampler_function, extra_options={"ntp_start": x_k.to(torch.float32)})
    out = comfy.sample.sample_custom(patcher, noise, guidance, sampler, sigmas, positive, negative, latent_image,
                                     callback=callback, disable_pbar=True, seed=0)
    # sample_custom returns process_latent_out(...) of what our sampler returned
    return base.process_latent_in(out.to(torch.float32))
