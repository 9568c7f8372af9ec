"""User masks for the edit (pure torch): resize to the latent, combine with the local-blend mask, blend rows.

A *user mask* is a ComfyUI MASK: a float tensor [B, H, W] (or [H, W]) with values in [0, 1], at any size
(usually the image's). It restricts the edit: after every DDIM step each edited row becomes

    x_edit <- x_src + m * (x_edit - x_src)

with ``x_src`` the source (reconstruction) row, exactly as Prompt-to-Prompt's local blend does with its own mask
(``AttentionEdit.apply_blend``); here ``m`` may be soft (values between 0 and 1 blend proportionally). Where
``m == 0`` the edited row is bit-identical to the source row, where ``m == 1`` it is bit-identical to the
unmasked edit (:func:`blend_rows` selects those values instead of computing ``x_src + 1 * (x - x_src)``, which
can differ from ``x`` in the last bit).

Resizing: the mask is resized to the latent's height x width with nearest-neighbour sampling
(``torch.nn.functional.interpolate(mode="nearest")``), the interpolation the reference uses to bring the local-blend
mask to the latent. At an integer ratio (image = latent x 8) it takes the top-left pixel of every 8x8 block, so a
mask that is constant on those blocks (the MASK that Edited Sample outputs) goes back in unchanged. Masks of
another aspect ratio are stretched. Grow or feather a mask painted with strokes thinner than 8 pixels.

Combination with local blend (``mode``):
    * no blend words: the user mask alone;
    * with blend words, before the blend start step: the user mask alone (there is no blend mask yet);
    * from the blend start on: ``m_user * m_blend`` ("intersection", default) or ``max(m_user, m_blend)``
      ("union"), with ``m_blend`` the reference's mask of that step (rows 1.., each already united with the
      source's mask).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as nnf

__all__ = ["COMBINE_MODES", "LATENT_SCALE", "MaskError", "blend_rows", "combine_masks", "prepare_user_mask",
           "to_image_mask"]

COMBINE_MODES = ("intersection", "union")
LATENT_SCALE = 8  # SD 1.x/2.x and SDXL VAEs: image pixels per latent cell, each way


class MaskError(ValueError):
    """A mask that cannot be used; the message says why (the node turns it into a NodeInputError)."""


def prepare_user_mask(mask: torch.Tensor, n_edits: int, latent_hw: tuple[int, int]) -> torch.Tensor:
    """A ComfyUI MASK ([B, H, W] or [H, W], any size) -> [n_edits, 1, h, w] float32 in [0, 1] at the latent size.

    One mask (B == 1) restricts every edit; B == n_edits gives one mask per edit (target prompt), in order. Values
    are clamped to [0, 1]; NaN or infinite values are refused.
    """
    if not isinstance(mask, torch.Tensor):
        raise MaskError(f"expected a MASK (a tensor [batch, height, width]), got {type(mask).__name__}.")
    m = mask.detach()
    if m.dim() == 2:
        m = m[None]
    if m.dim() == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.dim() != 3 or m.shape[-1] < 1 or m.shape[-2] < 1:
        raise MaskError(f"expected a MASK [batch, height, width], got a tensor of shape {list(mask.shape)}.")
    b = int(m.shape[0])
    if b not in (1, n_edits):
        raise MaskError(f"it holds {b} masks but there {'is' if n_edits == 1 else 'are'} {n_edits} "
                        f"edit{'' if n_edits == 1 else 's'} (target prompts).")
    m = m.to(torch.float32)
    if not bool(torch.isfinite(m).all()):
        raise MaskError("it contains NaN or infinite values.")
    m = m.clamp(0.0, 1.0)
    h, w = (int(s) for s in latent_hw)
    m = nnf.interpolate(m[:, None], size=(h, w), mode="nearest")
    return m.expand(n_edits, 1, h, w).contiguous()


def combine_masks(user: Optional[torch.Tensor], blend: Optional[torch.Tensor],
                  mode: str = "intersection") -> Optional[torch.Tensor]:
    """The mask applied at one step, [n_edits, 1, h, w], or None when nothing restricts the edit.

    ``user``: [n_edits, 1, h, w] from :func:`prepare_user_mask` (or None); ``blend``: the local-blend mask of this
    step, [n_prompts, 1, h, w] as ``AttentionEdit.blend_mask`` returns it (row 0 = source, not used), or None
    before the blend start / without blend words.
    """
    if mode not in COMBINE_MODES:
        raise MaskError(f"unknown mask combination {mode!r}; expected one of {', '.join(COMBINE_MODES)}.")
    b = None if blend is None else blend[1:].to(torch.float32)
    if user is None:
        return b
    if b is None:
        return user
    user = user.to(b.device)
    return user * b if mode == "intersection" else torch.maximum(user, b)


def blend_rows(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rows 1.. of ``x`` [n_prompts, C, H, W] (or [n_prompts, C, T, H, W]) become ``x[0] + mask * (x[i] - x[0])`` with
    ``mask`` [n_edits, 1, H, W]; exactly ``x[0]`` where ``mask <= 0`` and exactly ``x[i]`` where ``mask >= 1``. Row 0
    is kept. Returns a new tensor."""
    if x.shape[0] != mask.shape[0] + 1:
        raise ValueError(f"blend_rows: {x.shape[0]} latent rows need {x.shape[0] - 1} masks, got {mask.shape[0]}")
    m = mask.to(x.device, x.dtype)
    while m.ndim < x.ndim:
        m = m.unsqueeze(2)
    src, edits = x[:1], x[1:]
    src_b = src.expand_as(edits)
    mixed = src + m * (edits - src)
    mixed = torch.where(m >= 1, edits, mixed)
    mixed = torch.where(m <= 0, src_b, mixed)
    return torch.cat([src, mixed])


def to_image_mask(mask: torch.Tensor, scale: int = LATENT_SCALE) -> torch.Tensor:
    """A latent-size mask [n, 1, h, w] -> a ComfyUI MASK [n, h*scale, w*scale] (each latent cell a scale x scale
    block: the mask exactly as it was applied)."""
    m = mask[:, 0].to(torch.float32)
    return m.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
