"""The seam every model family implements (``ModelFamily``), and what the nodes get from it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional, Protocol

import torch

from ...core.attention_edit import AttentionEdit


@dataclass
class EditPatch:
    """What a family's edit installation returns: the patched clone and the object recording the maps
    (``store.mean_maps()``, ``store.map_hw``)."""

    patcher: object
    store: object


class ModelFamily(Protocol):
    """One model family (``host/families/<name>.py``)."""

    #: the ``model_family`` names the family writes into inversions (the first is the default)
    names: tuple[str, ...]
    #: the family's name for people (what an Attention Controller's control records)
    label: str
    #: the usual number of sampling steps (DDIM Invert's ``steps`` 0) and guidance of the family
    default_steps: int
    default_guidance: float
    #: latent channels of the family's VAE
    latent_channels: int
    #: the model's latent is sampled from the inversion's x_T by the pack's sampler function (flow models: the
    #: host's noise scaling cannot start a flow sampler from a given latent at sigma 1)
    starts_in_sampler: bool
    #: where Null-Text Optimize starts when its ``null_start`` is "auto": "null" (the 'null' input, the reference)
    #: or "source" (the source prompt's embedding)
    null_start: str
    #: the model takes its guidance strength as an input and has no unconditional branch (Flux-dev): sampled at
    #: classifier-free guidance 1
    guidance_distilled: bool
    #: (problem, fix) where Null-Text Optimize cannot run on the family (Flux-dev); None where it can
    null_text_refusal: Optional[tuple[str, str]]

    def accepts(self, patcher) -> bool: ...

    def refusal(self, patcher) -> Optional[tuple[str, str]]:
        """(problem, fix) for a model this family recognises but cannot edit; None otherwise."""

    def name_of(self, patcher) -> str: ...

    def schedule(self, patcher, steps: int): ...

    def pooled_width(self, patcher) -> int: ...

    def text_condition(self, patcher, conditioning, node: str, input_name: str) -> torch.Tensor: ...

    def to_conditioning(self, packed: torch.Tensor, patcher) -> list: ...

    def unet(self, patcher, schedule): ...

    def gradients(self, patcher, memory_saving: bool) -> ContextManager: ...

    def install_edit(self, patcher, edit: Optional[AttentionEdit], schedule, n_prompts: int, text_len: int,
                     latent_shape: tuple[int, ...], text_lengths: Optional[list[int]]) -> EditPatch: ...

    def tokenizes(self, clip) -> bool: ...

    def prompt_tokens(self, clip, text: str, text_len: Optional[int] = None): ...

    def pads_prompts(self) -> bool:
        """True where prompts of different token counts are padded to one length for an edit (Qwen-Image)."""


def nested(*managers: Callable[[], ContextManager]) -> ContextManager:
    """The context managers made by ``managers``, entered in order."""
    stack = contextlib.ExitStack()

    @contextlib.contextmanager
    def run():
        with stack:
            for m in managers:
                stack.enter_context(m())
            yield
    return run()
