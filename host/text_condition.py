"""The text condition of one prompt as a single tensor, for models that also take a pooled text vector (SDXL).

SD 1.x/2.x condition the UNet on the token embeddings only ([1, 77, D]). SDXL adds CLIP-G's pooled vector
([1, 1280]), which the host turns into the ADM input ``y = [pooled | size embeddings]``
(``comfy.model_base.SDXL.encode_adm``). Null-text inversion optimises both, so the algorithm (``core/``, which
works on one tensor per prompt) receives them *packed*: the token rows followed by one extra row that holds the
pooled vector, zero-padded to D::

    packed[:, :77]      token embeddings (CLIP-L | CLIP-G, D = 2048 for SDXL)
    packed[:, 77, :P]   pooled vector (P = 1280 for SDXL)
    packed[:, 77, P:]   zeros

Adam works element by element and the padding gets zero gradients, so optimising the packed tensor is exactly
optimising the two parts with one optimiser. Only ``HostUNet`` and the sampler wrapper unpack it. Models without
a pooled input (``pooled_dim == 0``) use the token embeddings as they are.
"""

from __future__ import annotations

from typing import Optional

import torch

import comfy.model_base

from .errors import NodeInputError

#: Conditioning keys that change SDXL's size embeddings; this pack supports the defaults only (see ``text_condition``).
SIZE_KEYS = ("width", "height", "crop_w", "crop_h", "target_width", "target_height")

#: SDXL's ADM vector is the pooled text vector followed by six 256-wide size embeddings (``encode_adm``).
SDXL_SIZE_EMBEDDING_WIDTH = 6 * 256


def pooled_dim(patcher) -> int:
    """Width of the pooled text vector the model takes (0: none, SD 1.x/2.x)."""
    base = patcher.model
    if isinstance(base, comfy.model_base.SDXL) and getattr(base, "adm_channels", None):
        return int(base.adm_channels) - SDXL_SIZE_EMBEDDING_WIDTH
    return 0


def pack(context: torch.Tensor, pooled: Optional[torch.Tensor], dim: int) -> torch.Tensor:
    """[B, T, D] tokens (+ [B, P] pooled when ``dim`` = P > 0) -> [B, T(+1), D]."""
    if dim == 0:
        return context
    if pooled is None or pooled.shape[-1] != dim:
        raise ValueError(f"expected a pooled vector of width {dim}, got {None if pooled is None else list(pooled.shape)}")
    row = context.new_zeros(context.shape[0], 1, context.shape[2])
    row[:, 0, :dim] = pooled.to(context.dtype).expand(context.shape[0], -1)
    return torch.cat([context, row], dim=1)


def unpack(packed: torch.Tensor, dim: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Inverse of ``pack``: (tokens [B, T, D], pooled [B, P] or None). Differentiable."""
    if dim == 0:
        return packed, None
    return packed[:, :-1], packed[:, -1, :dim]


def conditioning_tensor(conditioning, node: str, input_name: str) -> torch.Tensor:
    """The embedding of a single-entry CONDITIONING, [1, tokens, dim]."""
    if not isinstance(conditioning, list) or len(conditioning) == 0:
        raise NodeInputError(node, input_name, "no conditioning was given.", "connect a CLIP Text Encode output.")
    if len(conditioning) != 1:
        raise NodeInputError(
            node, input_name, f"it has {len(conditioning)} entries (combined or area conditioning).",
            "connect a single CLIP Text Encode output; combined/area conditioning is not supported here.")
    emb = conditioning[0][0]
    if emb.ndim != 3 or emb.shape[0] != 1:
        raise NodeInputError(node, input_name, f"expected an embedding of shape [1, tokens, dim], got {list(emb.shape)}.",
                             "connect a CLIP Text Encode output of one prompt.")
    return emb


def conditioning_extras(conditioning) -> dict:
    """The options dict of a CONDITIONING's first entry (pooled vector, guidance, masks), {} without one."""
    extras = conditioning[0][1]
    return extras if isinstance(extras, dict) else {}


def text_condition(patcher, conditioning, node: str, input_name: str) -> torch.Tensor:
    """One prompt's CONDITIONING as the tensor the algorithm works on (packed for SDXL), with clear errors."""
    emb = conditioning_tensor(conditioning, node, input_name)
    unet_config = getattr(getattr(patcher.model, "model_config", None), "unet_config", None) or {}
    context_dim = unet_config.get("context_dim")
    if context_dim is not None and emb.shape[-1] != int(context_dim):
        raise NodeInputError(
            node, input_name, f"its token embeddings are {emb.shape[-1]} wide but this model reads {context_dim}: "
            "the prompt was encoded with another model family's CLIP.",
            "encode the prompt with the CLIP output of the same Load Checkpoint as the model.")
    dim = pooled_dim(patcher)
    if dim == 0:
        return emb
    extras = conditioning_extras(conditioning)
    sized = [k for k in SIZE_KEYS if k in extras]
    if sized:
        raise NodeInputError(
            node, input_name, f"it carries SDXL size conditioning ({', '.join(sized)}), which inversion does not model.",
            "encode the prompt with the plain CLIP Text Encode node (the sizes then follow the image, as in sampling).")
    pooled = extras.get("pooled_output")
    if pooled is None or pooled.ndim != 2 or pooled.shape[-1] != dim:
        got = "none" if pooled is None else f"shape {list(pooled.shape)}"
        raise NodeInputError(
            node, input_name, f"an SDXL model needs the pooled text vector (width {dim}) in the conditioning; got {got}.",
            "encode the prompt with CLIP Text Encode using the CLIP of the same SDXL checkpoint.")
    if dim > emb.shape[-1]:
        raise NodeInputError(node, input_name, f"pooled width {dim} exceeds the token width {emb.shape[-1]}.",
                             "use the CLIP of the same checkpoint as the model.")
    return pack(emb, pooled, dim)


def to_conditioning(packed: torch.Tensor, dim: int) -> list:
    """A host CONDITIONING list for a packed condition (rows stay rows)."""
    tokens, pooled = unpack(packed, dim)
    return [[tokens, {} if pooled is None else {"pooled_output": pooled}]]
