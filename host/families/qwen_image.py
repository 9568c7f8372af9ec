"""Qwen-Image: MMDiT joint attention over the Qwen2.5-VL text sequence, flow matching with real classifier-free
guidance.

What is optimised: the negative text sequence (the text encoder's hidden states after the chat template's opening
tokens; no pooled vector). Words: Qwen's BPE tokens from the first position (the space belongs to the next word's
token), then the template's closing tokens. Prompts of different token counts are padded to one length for an
edit and their padding is masked (``host.joint_attention``). Attention: the joint attention of every block through
the override; maps on the 2x2-patch grid.
"""

from __future__ import annotations

from typing import Optional

import comfy.model_base

from ...core.prompt_tokens import PromptError, PromptTokens
from ..flow_model import is_flow_model
from ..word_tokens import plain_ids, word_tokens
from .joint import JointAttentionFamily

QWEN_TOKENIZER = "qwen25_7b"
IM_START, USER, NEWLINE = 151644, 872, 198


def template_end(ids: list[int]) -> int:
    """Where the host's Qwen-Image encoder cuts the chat template off (``QwenImageTEModel.encode_token_weights``:
    at the second ``<|im_start|>``, after ``user\\n`` when it follows)."""
    starts = [i for i, t in enumerate(ids) if t == IM_START][:2]
    if not starts:
        raise PromptError("this CLIP's tokens carry no Qwen chat template; connect the Qwen-Image text encoder "
                          "(Load CLIP, type qwen_image).")
    end = starts[-1]
    if len(ids) > end + 3 and ids[end + 1] == USER and ids[end + 2] == NEWLINE:
        end += 3
    return end


def _context_ids(clip, text: str) -> list[int]:
    """The token ids of ``text`` at the positions of the encoder's output (the template's opening removed)."""
    ids = plain_ids(clip.tokenize(text)[QWEN_TOKENIZER][0])
    return ids[template_end(ids):]


class QwenImageFamily(JointAttentionFamily):
    names = ("Qwen-Image",)
    label = "Qwen-Image"
    default_steps = 30  # between ComfyUI's Qwen-Image template (20) and the diffusers pipeline (50)
    default_guidance = 4.0  # the diffusers QwenImagePipeline's true_cfg_scale
    block_classes = ("QwenImageTransformerBlock",)
    tokenizer_keys = frozenset({QWEN_TOKENIZER})
    # The empty negative is 5 tokens (the chat template's end) reaching the image only through joint attention; no
    # pooled vector modulates the blocks. Optimised from there, it cannot reproduce the prompt's prediction that an
    # exact reconstruction needs (tiny model, 8 steps, guidance 4: 1.2x better than plain inversion; from the source
    # prompt: 20x). Null-Text Optimize starts from the source prompt.
    null_start = "source"
    clip_hint = "the Qwen-Image text encoder (Load CLIP with type qwen_image)"

    def accepts(self, patcher) -> bool:
        return type(patcher.model) is comfy.model_base.QwenImage and is_flow_model(patcher)

    def context_width(self, patcher) -> Optional[int]:
        config = getattr(patcher.model.model_config, "unet_config", {}) or {}
        width = config.get("joint_attention_dim")
        return int(width) if width else None

    def pads_prompts(self) -> bool:
        return True

    def prompt_tokens(self, clip, text: str, text_len: Optional[int] = None) -> PromptTokens:
        """The words at positions 0.., the template's closing tokens after them; ``text_len`` positions in all
        (the longest prompt of an edit; the others are padded)."""
        suffix = _context_ids(clip, "")
        full = _context_ids(clip, text)
        if full[len(full) - len(suffix):] != suffix:
            raise PromptError("the prompt's tokens do not end with the chat template's closing tokens.")
        def stream(t: str) -> list[int]:
            ids = _context_ids(clip, t)
            return ids[: len(ids) - len(suffix)]

        words, per_word = word_tokens(stream, text)
        length = len(full) if text_len is None else int(text_len)
        return PromptTokens(text=text, words=words, word_tokens=per_word, bos=-1, eos=suffix[0] if suffix else -1,
                            max_len=length, prefix=(), suffix=tuple(suffix))


QWEN_IMAGE = QwenImageFamily()
