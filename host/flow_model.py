"""Flow-matching transformers (SD3/SD3.5, Qwen-Image) through the host's ``apply_model``: the velocity, the host's
sigmas, the model's latent layout.

The host's flow models (``model_sampling`` CONST) take ``x_sigma`` as it is and return ``denoised = x - sigma v``,
so the velocity is ``(x - denoised) / sigma``; patches, wrappers and LoRA upstream apply as for SD.
"""

from __future__ import annotations


import torch

import comfy.model_sampling
import comfy.samplers

from ..core.flow import FlowSchedule
from .unet import HostUNet

#: The host's scheduler for the flow families' sigmas: ComfyUI's own templates sample SD3.5 and Qwen-Image with the
#: ``euler`` sampler on these (``KSampler`` scheduler "simple").
SCHEDULER = "simple"


def is_flow_model(patcher) -> bool:
    """True when the model's sampling is flow matching (CONST: ``x = (1 - sigma) x0 + sigma noise``)."""
    return isinstance(patcher.get_model_object("model_sampling"), comfy.model_sampling.CONST)


def flow_schedule(patcher, steps: int) -> FlowSchedule:
    """The sigmas the host's Euler sampler uses for ``steps`` steps (the model's own shift)."""
    ms = patcher.get_model_object("model_sampling")
    return FlowSchedule.from_sigmas(comfy.samplers.calculate_sigmas(ms, SCHEDULER, steps).to("cpu", torch.float64))


class FlowUNet(HostUNet):
    """``eps(x, sigma, context)`` = the velocity ``v`` of a flow-matching model at ``sigma`` (a float), through the
    host's ``apply_model``; ``pooled_width`` > 0: contexts are packed with the pooled vector (SD3's ``y``)."""

    def __init__(self, patcher, schedule: FlowSchedule, pooled_width: int = 0) -> None:
        super().__init__(patcher, sample_sigmas=schedule.sigmas(), pooled_width=pooled_width)

    def _sigma_of(self, level) -> float:
        return float(level)

    def _model_input(self, x: torch.Tensor, sigma_f: float) -> torch.Tensor:
        return x

    def _y(self, pooled: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return pooled.to(self.device, torch.float32)


def with_model_frame_axis(patcher, samples: torch.Tensor) -> torch.Tensor:
    """``samples`` [B, C, (T,) H, W] with the frame axis the model's latent format has: Qwen-Image's (Wan 2.1,
    ``latent_dimensions`` 3) takes [B, C, 1, H, W] (the host's samplers add the axis to a 4-D latent, as a 2-D
    16-channel VAE gives); the others take [B, C, H, W]."""
    dims = getattr(getattr(patcher.model, "latent_format", None), "latent_dimensions", 2)
    if dims == 3 and samples.ndim == 4:
        return samples.unsqueeze(2)
    if dims == 2 and samples.ndim == 5 and samples.shape[2] == 1:
        return samples.squeeze(2)
    return samples


def latent_cells(latent_shape: tuple[int, ...], patch: int = 2) -> tuple[int, int]:
    """The image-token grid (h, w) of a latent [.., H, W] for a ``patch`` x ``patch`` patchifier (padded up)."""
    h, w = int(latent_shape[-2]), int(latent_shape[-1])
    return (h + patch - 1) // patch, (w + patch - 1) // patch
