"""The model families the pack edits, one module each behind one seam (``base.ModelFamily``).

A family says what is optimised (the conditioning tensor, packed with a pooled vector where the model takes one),
how tokens map to words (its tokenizers), where attention is read and edited (its patch), the schedule and the
map geometry. Nodes ask :func:`family_of` for the model's family and :func:`family_of_clip` for a CLIP's; a new
family is one module here added to ``FAMILIES``.
"""

from __future__ import annotations

from ..errors import NodeInputError
from .base import ModelFamily
from .flux import CHROMA, FLUX
from .qwen_image import QWEN_IMAGE
from .sd import SD
from .sd3 import SD3

#: Every family, in the order they are asked.
FAMILIES: tuple[ModelFamily, ...] = (SD, SD3, QWEN_IMAGE, FLUX, CHROMA)

SUPPORTED = "SD 1.x/2.x, SDXL, SD3/SD3.5, Qwen-Image, Flux.1-dev or Chroma"


def family_of(patcher, node: str) -> ModelFamily:
    """The family of a MODEL, or a NodeInputError naming what is supported (and why a known model is not)."""
    for family in FAMILIES:
        if family.accepts(patcher):
            return family
    for family in FAMILIES:
        reason = family.refusal(patcher)
        if reason:
            raise NodeInputError(node, "model", reason[0], reason[1])
    from ..model_fingerprint import model_config_name

    raise NodeInputError(
        node, "model", f"this model ({model_config_name(patcher)}) is not one the pack edits.",
        f"load a {SUPPORTED} model; other families are not supported yet.")


def model_family_name(patcher, node: str) -> str:
    """The model's family name as inversions record it ("SD1.x", "SD2.x", "SDXL", "SD3", "Qwen-Image", "Flux",
    "Chroma"), or the NodeInputError of :func:`family_of`."""
    return family_of(patcher, node).name_of(patcher)


def family_named(name: str) -> ModelFamily | None:
    """The family that writes ``name`` as an inversion's ``model_family`` (e.g. "SDXL", "SD3"), or None."""
    return next((f for f in FAMILIES if name in f.names), None)


def family_of_clip(clip) -> ModelFamily | None:
    """The family whose tokenizers this CLIP has (None: none of them)."""
    return next((f for f in FAMILIES if f.tokenizes(clip)), None)
