"""Flux.1 (dev, schnell) and Chroma: double-stream blocks (joint attention over text and image tokens, as SD3) then
single-stream blocks (one attention over the same sequence), flow matching, T5 text.

- **Flux-dev / schnell** are distilled: no unconditional branch, the guidance strength is a model input (the
  conditioning's ``guidance``, set by FluxGuidance or CLIP Text Encode Flux; the host's default 3.5). Sampled at
  CFG 1. What is kept per prompt: the T5 tokens (the context), the CLIP-L pooled vector (the model's ``y``) and the
  guidance value, packed as one tensor (``host.text_condition`` with the guidance after the pooled vector, so it
  travels with the prompt, enters its fingerprint and is saved with an inversion). There is nothing for null-text
  optimisation to optimise; Direct Inversion (Fast Inversion) reconstructs the photo exactly and needs no
  unconditional prediction at CFG 1.
- **Chroma** was trained with real classifier-free guidance and has no pooled vector and no guidance input of its
  own (the host feeds its modulation approximator 0): null-text inversion works as for SD3. Its T5 prompts are not
  padded (token counts differ between prompts: an edit pads them and masks the padding, as for Qwen-Image).

Words: T5 tokens from position 0 (no start token), the end token, then padding (Flux: to 256). Attention: every
double- and single-stream block through the joint-attention override (``host.joint_attention``); text tokens come
first in both; maps on the 2x2-patch grid.
"""

from __future__ import annotations

from typing import Optional

import torch

import comfy.model_base

from ...core.flow import FlowSchedule
from ...core.prompt_tokens import PromptTokens
from ..errors import NodeInputError
from ..flow_model import FlowUNet, is_flow_model
from ..text_condition import conditioning_extras, unpack
from ..unet import saved_activations_copied
from ..word_tokens import t5_prompt_tokens
from .joint import JointAttentionFamily

#: The guidance the host gives a Flux model whose conditioning has none (``comfy.model_base.Flux.extra_conds``).
FLUX_DEFAULT_GUIDANCE = 3.5
#: The guidance the host gives Chroma (``comfy.model_base.Chroma.extra_conds``): Chroma is sampled with real CFG.
CHROMA_GUIDANCE = 0.0
FLUX_TOKENIZERS = frozenset({"l", "t5xxl"})
CHROMA_TOKENIZERS = frozenset({"t5xxl"})


def _unet_config(patcher) -> dict:
    return getattr(patcher.model.model_config, "unet_config", {}) or {}


class FluxUNet(FlowUNet):
    """The velocity of a Flux-architecture model through ``apply_model``, with its extra inputs: ``y`` (the pooled
    CLIP-L vector, ``vec_width`` wide; 0: none) and ``guidance``: the value packed after the pooled vector (Flux), or
    ``constant_guidance`` for every row (Chroma)."""

    def __init__(self, patcher, schedule: FlowSchedule, vec_width: int, constant_guidance: Optional[float] = None) -> None:
        self.vec_width = vec_width
        self.constant_guidance = constant_guidance
        super().__init__(patcher, schedule, 0 if constant_guidance is not None else vec_width + 1)

    def _extra_inputs(self, pooled: Optional[torch.Tensor], x: torch.Tensor) -> dict:
        if self.constant_guidance is not None:
            return {"guidance": torch.full((x.shape[0],), self.constant_guidance, device=self.device, dtype=torch.float32)}
        row = pooled.to(self.device, torch.float32)
        return {"y": row[:, :self.vec_width], "guidance": row[:, self.vec_width]}


class FluxArchitecture(JointAttentionFamily):
    """What Flux-dev/schnell and Chroma share: latent, blocks, T5 words, context width."""

    latent_channels = 16
    patch_size = 2
    block_classes = ("DoubleStreamBlock", "SingleStreamBlock")
    # the blocks add to their residual streams in place, which autograd cannot go back through by itself
    block_context = staticmethod(saved_activations_copied)

    def context_width(self, patcher) -> Optional[int]:
        width = _unet_config(patcher).get("context_in_dim")
        return int(width) if width else None

    def prompt_tokens(self, clip, text: str, text_len: Optional[int] = None) -> PromptTokens:
        """The words at T5 positions 0.., the end token after them; ``text_len`` positions in all where prompts
        are padded to one length (None: the tokenizer's own length)."""
        return t5_prompt_tokens(clip, text, text_len)


class FluxFamily(FluxArchitecture):
    names = ("Flux",)
    label = "Flux"
    default_steps = 28  # Black Forest Labs' Flux-dev reference and the diffusers FluxPipeline
    default_guidance = 1.0  # classifier-free guidance: none (the model's own guidance input does the guiding)
    guidance_distilled = True
    tokenizer_keys = FLUX_TOKENIZERS
    clip_hint = "the Flux text encoders (DualCLIPLoader with clip_l and t5xxl, type flux)"
    null_text_refusal = (
        "Flux-dev and Flux-schnell are guidance-distilled: the guidance strength is an input of the model and there is "
        "no unconditional branch, so null-text inversion has nothing to optimise.",
        "use Fast Inversion with method direct-inversion and guidance 1 instead (it reconstructs the photo exactly), "
        "then Edited Sample with guidance 1; set the Flux guidance with FluxGuidance on the source prompt.")

    def accepts(self, patcher) -> bool:
        return type(patcher.model) is comfy.model_base.Flux and is_flow_model(patcher) and not self._image_inputs(patcher)

    def refusal(self, patcher) -> Optional[tuple[str, str]]:
        extra = self._image_inputs(patcher) if type(patcher.model) is comfy.model_base.Flux else 0
        if extra:
            return (f"this Flux model takes {extra} extra input channels (an image or mask beside the latent: Flux Fill, "
                    "Canny or Depth), which inversion does not model.", "load Flux-dev (or a Flux-dev fine-tune).")
        return None

    @staticmethod
    def _image_inputs(patcher) -> int:
        """Input channels beyond the latent's (Flux Fill/Canny/Depth concatenate an image or a mask)."""
        config = _unet_config(patcher)
        return max(0, int(config.get("in_channels", 16)) - int(config.get("out_channels", 16)))

    def pooled_width(self, patcher) -> int:
        return int(_unet_config(patcher).get("vec_in_dim") or 768)

    def text_condition(self, patcher, conditioning, node: str, input_name: str) -> torch.Tensor:
        """The T5 tokens packed with the pooled CLIP-L vector and, after it, the guidance value."""
        packed = super().text_condition(patcher, conditioning, node, input_name)
        guidance = conditioning_extras(conditioning).get("guidance", FLUX_DEFAULT_GUIDANCE)
        if guidance is None:
            raise NodeInputError(node, input_name, "the conditioning carries no Flux guidance value (guidance None).",
                                 "set it with FluxGuidance (3.5 is the usual value) or encode with CLIP Text Encode Flux.")
        packed = packed.clone()
        packed[:, -1, self.pooled_width(patcher)] = float(guidance)
        return packed

    def to_conditioning(self, packed: torch.Tensor, patcher) -> list:
        """One CONDITIONING for the packed rows; every row is sampled with the first row's guidance (the host takes
        one value per conditioning)."""
        dim = self.pooled_width(patcher)
        tokens, pooled = unpack(packed, dim)
        return [[tokens, {"pooled_output": pooled, "guidance": float(packed[0, -1, dim])}]]

    def unet(self, patcher, schedule) -> FluxUNet:
        return FluxUNet(patcher, schedule, self.pooled_width(patcher))


class ChromaFamily(FluxArchitecture):
    names = ("Chroma",)
    label = "Chroma"
    default_steps = 26  # ComfyUI's Chroma template (26 steps, CFG 3.5, euler)
    default_guidance = 3.5  # ComfyUI's Chroma template
    tokenizer_keys = CHROMA_TOKENIZERS
    clip_hint = "the Chroma text encoder (Load CLIP with t5xxl, type chroma)"
    # The empty negative is one T5 token reaching the image only through attention (no pooled vector, no guidance
    # input); optimised from there it cannot reproduce the prompt's prediction, as Qwen-Image's 5 tokens (tiny model,
    # 8 steps, guidance 3.5: 1.5x better than plain inversion; from the source prompt: 20x).
    null_start = "source"

    def accepts(self, patcher) -> bool:
        return type(patcher.model) is comfy.model_base.Chroma and is_flow_model(patcher)

    def text_condition(self, patcher, conditioning, node: str, input_name: str) -> torch.Tensor:
        emb = super().text_condition(patcher, conditioning, node, input_name)
        guidance = conditioning_extras(conditioning).get("guidance")
        if guidance is not None and float(guidance) != CHROMA_GUIDANCE:
            raise NodeInputError(node, input_name, f"it carries a Flux guidance value ({float(guidance):g}); Chroma is "
                                 "sampled with classifier-free guidance and its guidance input at 0.",
                                 "remove the FluxGuidance node from this prompt and set the guidance on the pack's nodes.")
        return emb

    def to_conditioning(self, packed: torch.Tensor, patcher) -> list:
        """The token rows with ``pooled_output`` None, as the host's Chroma text encoder gives them (0.3.64's
        ``Flux.encode_adm`` requires the key)."""
        return [[packed, {"pooled_output": None}]]

    def pads_prompts(self) -> bool:
        return True

    def unet(self, patcher, schedule) -> FluxUNet:
        return FluxUNet(patcher, schedule, 0, constant_guidance=CHROMA_GUIDANCE)


FLUX = FluxFamily()
CHROMA = ChromaFamily()
