"""SD3 / SD3.5 (Medium, Large, Large Turbo): MMDiT joint attention, flow matching with real classifier-free guidance.

What is optimised: the negative context (77 CLIP-L|G tokens per 75-token chunk, then the T5 tokens, 4096 wide) and
the pooled CLIP-L+G vector (the model's ``y``), packed as for SDXL (``host.text_condition``). Words: the CLIP-L
tokens of each chunk at 77 positions per chunk, then the T5 tokens after them (``PromptLayout``). Attention: the
joint attention of every MMDiT block through the override (``host.joint_attention``); maps on the 2x2-patch grid.
"""

from __future__ import annotations

from typing import Optional

import comfy.model_base

from ...core.prompt_tokens import PromptError, PromptLayout, PromptTokens
from ..flow_model import is_flow_model
from ..word_tokens import SYNTAX, plain_ids, t5_prompt_tokens, word_tokens
from .joint import JointAttentionFamily

CLIP_CHUNK = 77
CLIP_BOS, CLIP_EOS = 49406, 49407
SD3_TOKENIZERS = frozenset({"l", "g", "t5xxl"})


def _clip_chunks(clip, text: str) -> list[list[int]]:
    """The real CLIP-L tokens of each 77-token chunk (no start/end/padding)."""
    out = []
    for chunk in clip.tokenize(text)["l"]:
        ids = plain_ids(chunk)
        end = ids.index(CLIP_EOS, 1) if CLIP_EOS in ids[1:] else len(ids)
        out.append(ids[1:end])
    return out


def _encoders(clip) -> tuple[bool, bool]:
    """(CLIP-L or CLIP-G loaded, T5 loaded): the parts the context has (the host's SD3 text stack)."""
    stack = clip.cond_stage_model
    has_clip = getattr(stack, "clip_l", None) is not None or getattr(stack, "clip_g", None) is not None
    return has_clip, getattr(stack, "t5xxl", None) is not None


class SD3Family(JointAttentionFamily):
    names = ("SD3",)
    label = "SD3/SD3.5"
    default_steps = 28  # SD3.5 Medium/Large model cards and ComfyUI's SD3.5 templates sample with 28 steps or fewer
    default_guidance = 4.5  # the SD3.5 Medium model card (Large: 3.5-4.5)
    block_classes = ("JointBlock",)
    tokenizer_keys = SD3_TOKENIZERS
    clip_hint = "the CLIP of the same SD3/SD3.5 checkpoint (or Triple CLIP Loader with clip_l, clip_g and t5xxl)"

    def accepts(self, patcher) -> bool:
        return isinstance(patcher.model, comfy.model_base.SD3) and is_flow_model(patcher)

    def pooled_width(self, patcher) -> int:
        config = getattr(patcher.model.model_config, "unet_config", {}) or {}
        return int(config.get("adm_in_channels") or 2048)

    def context_width(self, patcher) -> Optional[int]:
        config = getattr(patcher.model.model_config, "unet_config", {}) or {}
        embedder = config.get("context_embedder_config") or {}
        width = (embedder.get("params") or {}).get("in_features")
        return int(width) if width else None

    def prompt_tokens(self, clip, text: str, text_len: Optional[int] = None) -> PromptLayout:
        """The prompt's words at their positions in SD3's context: each CLIP chunk (77 positions: start token,
        words, end token, padding), then T5 (words, end token, padding to 77 or more)."""
        has_clip, has_t5 = _encoders(clip)
        words, clip_words = word_tokens(lambda t: [i for c in _clip_chunks(clip, t) for i in c], text)
        segments, firsts, offset = [], [], 0
        if has_clip:
            # The host fills each chunk with 75 tokens and may cut a word at the boundary (0.33 tokenises a prompt
            # as one piece); a cut word is in both chunks' segments, each with its own tokens.
            pending = [list(t) for t in clip_words]
            w = 0
            for chunk in _clip_chunks(clip, text):
                first, taken, n = w, [], 0
                while w < len(words) and n < len(chunk):
                    part = pending[w][: len(chunk) - n]
                    taken.append(tuple(part))
                    n += len(part)
                    pending[w] = pending[w][len(part):]
                    if pending[w]:
                        break  # the rest of this word opens the next chunk
                    w += 1
                if [t for ws in taken for t in ws] != chunk:
                    raise PromptError(f"the CLIP chunks of {text[:60]!r} do not hold its words' tokens; {SYNTAX}")
                sub = words[first:first + len(taken)]
                segments.append((offset, PromptTokens(" ".join(sub), sub, tuple(taken), CLIP_BOS, CLIP_EOS,
                                                      max_len=CLIP_CHUNK)))
                firsts.append(first)
                offset += CLIP_CHUNK
        if has_t5:
            t5 = t5_prompt_tokens(clip, text)
            segments.append((offset, t5))
            firsts.append(0)
            offset += t5.max_len
        if not segments:
            raise PromptError("this CLIP has no text encoder loaded.")
        return PromptLayout(text=text, segments=tuple(segments), max_len=offset, first_words=tuple(firsts))


SD3 = SD3Family()
