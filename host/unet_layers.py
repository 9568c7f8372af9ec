"""Enumerate the host UNet's transformer blocks with their patch keys and resolutions (no hard-coded names)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, Upsample


@dataclass(frozen=True)
class AttentionLayer:
    key: tuple[str, int, int]  # (block name, block number, transformer index): the host's patch key
    downsample: int  # latent size / layer size (1, 2, 4, 8 for SD 1.x)
    has_cross: bool


def attention_layers(diffusion_model: torch.nn.Module) -> list[AttentionLayer]:
    """Every transformer block of an openaimodel-style UNet, in forward order."""
    layers: list[AttentionLayer] = []
    ds = 1

    def scan(block: torch.nn.Module, name: str, number: int) -> None:
        for layer in block:
            if isinstance(layer, SpatialTransformer):
                for j, tb in enumerate(layer.transformer_blocks):
                    layers.append(AttentionLayer((name, number, j), ds, getattr(tb, "attn2", None) is not None))

    for i, block in enumerate(diffusion_model.input_blocks):
        scan(block, "input", i)
        if any(isinstance(layer, Downsample) for layer in block):
            ds *= 2
    scan(diffusion_model.middle_block, "middle", 0)
    for i, block in enumerate(diffusion_model.output_blocks):
        scan(block, "output", i)
        if any(isinstance(layer, Upsample) for layer in block):
            ds //= 2
    return layers


def blend_downsample(layers: list[AttentionLayer], preferred: int = 4) -> int:
    """The cross-attention resolution used for local blend and attention maps.

    The reference uses the 16x16 layers of a 64x64 latent (downsample 4); models without such layers use the
    closest available resolution (ties go to the finer one).
    """
    available = sorted({l.downsample for l in layers if l.has_cross})
    if not available:
        raise ValueError("the model has no cross-attention layers")
    return min(available, key=lambda d: (abs(math.log2(d) - math.log2(preferred)), d))
