"""Small helpers shared by the node classes."""

from __future__ import annotations

import torch

import comfy.model_management

from ..core.values import tensor_fingerprint
from ..host.errors import NodeInputError


def single_latent(latent: dict, node: str, input_name: str = "latent") -> torch.Tensor:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or samples.ndim != 4:
        raise NodeInputError(node, input_name, "expected a LATENT of shape [batch, 4, height/8, width/8].",
                             "connect the output of VAE Encode.")
    if samples.shape[0] != 1:
        raise NodeInputError(node, input_name, f"the latent batch has {samples.shape[0]} images; one image is inverted at a time.",
                             "invert one image per DDIM Invert node (split the batch with Latent From Batch).")
    if samples.shape[1] != 4:
        raise NodeInputError(node, input_name, f"the latent has {samples.shape[1]} channels, SD 1.x latents have 4.",
                             "encode the image with the VAE of the SD 1.x checkpoint.")
    return samples


def cond_fingerprint(emb: torch.Tensor) -> str:
    return tensor_fingerprint(emb.to(torch.float32))


def interrupt_check() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()
