"""What the joint-attention flow transformers (SD3/SD3.5, Qwen-Image) share: the Euler flow schedule of the host's
sigmas, the velocity through ``apply_model``, gradients to the unconditional text, and Prompt-to-Prompt through
the attention override (``host.joint_attention``). Each family module fills in its conditioning and its words."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Optional

import torch

from ...core.flow import FlowSchedule
from ..compat import pure_torch_rope
from ..errors import NodeInputError
from ..flow_model import FlowUNet, flow_schedule, latent_cells
from ..joint_attention import OVERRIDE_KEY, JointAttentionPatch
from ..text_condition import conditioning_extras, conditioning_tensor, pack, to_conditioning
from ..unet import grad_capable_weights, recomputed_blocks
from .base import EditPatch, nested


class JointAttentionFamily:
    """Shared by the flow transformer families; subclasses set the class attributes and the hooks below."""

    names: tuple[str, ...] = ()
    default_steps = 28
    default_guidance = 4.5
    latent_channels = 16
    starts_in_sampler = True
    null_start = "null"  # where Null-Text Optimize starts ("null": the 'null' input; "source": the source prompt)
    guidance_distilled = False
    null_text_refusal: Optional[tuple[str, str]] = None
    patch_size = 2
    #: the class names of the transformer blocks (``memory_saving`` checkpoints them)
    block_classes: tuple[str, ...] = ()
    #: what the CLIP input must be, for error messages
    clip_hint = ""
    #: the keys of the family's CLIP tokenizer output (``clip.tokenize``)
    tokenizer_keys: frozenset = frozenset()
    #: a context the blocks run in under gradients, their recomputation included (``host.unet.recomputed_blocks``)
    block_context: Optional[Callable[[], ContextManager]] = None

    # -- model -----------------------------------------------------------------------------------------------
    def refusal(self, patcher) -> Optional[tuple[str, str]]:
        return None

    def name_of(self, patcher) -> str:
        return self.names[0]

    def schedule(self, patcher, steps: int) -> FlowSchedule:
        return flow_schedule(patcher, steps)

    def unet(self, patcher, schedule) -> FlowUNet:
        return FlowUNet(patcher, schedule, self.pooled_width(patcher))

    def context_width(self, patcher) -> Optional[int]:
        return None

    def gradients(self, patcher, memory_saving: bool):
        names = set(self.block_classes)
        blocks = [m for m in patcher.model.diffusion_model.modules() if type(m).__name__ in names] if memory_saving else []
        around = self.block_context or contextlib.nullcontext
        return nested(lambda: grad_capable_weights(patcher), pure_torch_rope, around,
                      lambda: recomputed_blocks(blocks, self.block_context))

    # -- conditioning ----------------------------------------------------------------------------------------
    def pooled_width(self, patcher) -> int:
        return 0

    def text_condition(self, patcher, conditioning, node: str, input_name: str) -> torch.Tensor:
        """The token embeddings, packed with the pooled vector where the model takes one."""
        emb = conditioning_tensor(conditioning, node, input_name)
        width = self.context_width(patcher)
        if width is not None and emb.shape[-1] != width:
            raise NodeInputError(
                node, input_name, f"its token embeddings are {emb.shape[-1]} wide but this {self.names[0]} model "
                f"reads {width}: the prompt was encoded with another model family's text encoder.",
                f"encode the prompt with {self.clip_hint}.")
        dim = self.pooled_width(patcher)
        if dim == 0:
            return emb
        pooled = conditioning_extras(conditioning).get("pooled_output")
        if pooled is None or pooled.ndim != 2 or pooled.shape[-1] != dim:
            got = "none" if pooled is None else f"shape {list(pooled.shape)}"
            raise NodeInputError(
                node, input_name, f"a {self.names[0]} model needs the pooled text vector (width {dim}) in the "
                f"conditioning; got {got}.", f"encode the prompt with {self.clip_hint}.")
        return pack(emb, pooled, dim)

    def to_conditioning(self, packed: torch.Tensor, patcher) -> list:
        return to_conditioning(packed, self.pooled_width(patcher))

    def tokenizes(self, clip) -> bool:
        try:
            return set(clip.tokenize("a")) == self.tokenizer_keys
        except Exception:  # a CLIP whose tokenizer needs other input is not this family's
            return False

    def pads_prompts(self) -> bool:
        return False

    # -- editing ---------------------------------------------------------------------------------------------
    def install_edit(self, patcher, edit, schedule, n_prompts: int, text_len: int, latent_shape,
                     text_lengths: Optional[list[int]]) -> EditPatch:
        """The joint-attention override on ``patcher`` (a clone), wrapping an override already there."""
        options = dict(patcher.model_options.get("transformer_options", {}))  # the clone's own dict
        upstream = options.get(OVERRIDE_KEY)
        h, w = latent_cells(tuple(latent_shape), self.patch_size)
        patch = JointAttentionPatch(edit, schedule, n_prompts, text_len, h * w, (h, w), text_lengths, upstream)
        options[OVERRIDE_KEY] = patch
        patcher.model_options["transformer_options"] = options
        return EditPatch(patcher, patch.store)
