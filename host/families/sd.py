"""Stable Diffusion 1.x / 2.x and SDXL: the UNet with cross-attention (the reference's models).

What is optimised: the token embeddings (SDXL: packed with CLIP-G's pooled vector, ``host.text_condition``); words
are CLIP tokens (``host.tokens``); attention is read and edited by the attn1/attn2 replace patches of every
transformer block (``host.attention_patch``), maps at the 1/4-size layers (``host.unet_layers``).
"""

from __future__ import annotations

from typing import Optional

import torch

from ...core.schedule import DDIMSchedule
from ..attention_patch import P2PAttentionPatch
from ..text_condition import pooled_dim, text_condition, to_conditioning
from ..tokens import prompt_tokens
from ..unet import HostUNet, alphas_cumprod, grad_capable_weights, recomputed_transformers, sd_family_name
from ..unet_layers import attention_layers, blend_downsample
from .base import EditPatch, nested

SD_TOKENIZERS = ({"l"}, {"h"}, {"g", "l"})


class SDFamily:
    names = ("SD1.x", "SD2.x", "SDXL")
    label = "SD 1.x/2.x/SDXL"
    default_steps = 50  # the reference's DDIM steps
    default_guidance = 7.5
    latent_channels = 4
    starts_in_sampler = False
    null_start = "null"  # the reference: the empty prompt's embedding
    guidance_distilled = False
    null_text_refusal = None

    def accepts(self, patcher) -> bool:
        return sd_family_name(patcher) is not None

    def refusal(self, patcher) -> Optional[tuple[str, str]]:
        return None

    def name_of(self, patcher) -> str:
        return sd_family_name(patcher) or self.names[0]

    def schedule(self, patcher, steps: int) -> DDIMSchedule:
        return DDIMSchedule.from_alphas_cumprod(alphas_cumprod(patcher), steps)

    def pooled_width(self, patcher) -> int:
        return pooled_dim(patcher)

    def text_condition(self, patcher, conditioning, node: str, input_name: str) -> torch.Tensor:
        return text_condition(patcher, conditioning, node, input_name)

    def to_conditioning(self, packed: torch.Tensor, patcher) -> list:
        return to_conditioning(packed, pooled_dim(patcher))

    def unet(self, patcher, schedule) -> HostUNet:
        return HostUNet(patcher, sample_sigmas=schedule.sigmas())

    def gradients(self, patcher, memory_saving: bool):
        return nested(lambda: grad_capable_weights(patcher),
                      lambda: recomputed_transformers(patcher.model.diffusion_model, memory_saving))

    def install_edit(self, patcher, edit, schedule, n_prompts: int, text_len: int, latent_shape, text_lengths) -> EditPatch:
        layers = attention_layers(patcher.model.diffusion_model)
        patch = P2PAttentionPatch(edit, schedule, n_prompts, layers, blend_downsample(layers))
        patch.install(patcher, layers)
        return EditPatch(patcher, patch.store)

    def tokenizes(self, clip) -> bool:
        try:
            keys = set(clip.tokenize("a"))
        except Exception:  # a CLIP whose tokenizer needs other input is not one of ours
            return False
        return keys in SD_TOKENIZERS

    def prompt_tokens(self, clip, text: str, text_len: Optional[int] = None):
        return prompt_tokens(clip, text)

    def pads_prompts(self) -> bool:
        return False


SD = SDFamily()
