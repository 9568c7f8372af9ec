"""Attention Controller node: Prompt-to-Prompt settings, prompts tokenised with the graph's CLIP."""

from __future__ import annotations

import dataclasses
import math

import torch

from comfy_api.latest import io

from ..core.attention_edit import BLEND_START, BLEND_THRESHOLD, CROSS_REPLACE, MODES, SELF_REPLACE
from ..core.prompt_tokens import PromptError
from ..core.values import AttentionControl
from ..host.errors import NodeInputError
from ..host.families import SUPPORTED, family_of_clip
from . import types
from .common import build_edit, cond_fingerprint
from .word_syntax import parse_word_list, parse_word_values, parse_word_windows

NODE = types.display_name("Attention Controller")
PAPER_VALUES = {"cross_replace": CROSS_REPLACE, "self_replace": SELF_REPLACE, "blend_threshold": BLEND_THRESHOLD,
                "blend_start": BLEND_START}
#: The local-blend mask keeps attention above the threshold of the max-normalised map, so 1.0 would select
#: nothing: the core accepts [0, 1) and the widget stops at this value.
BLEND_THRESHOLD_MAX = 0.99


def encode(clip, text: str) -> list:
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def stack_conditioning(conds: list[list], pad: bool = False) -> list:
    """One CONDITIONING whose embedding holds one row per prompt (rows of the latent batch). ``pad``: rows of
    different token counts are zero-padded to the longest, with the host's ``attention_mask`` (1 = token, 0 =
    padding) saying where each ends (Qwen-Image)."""
    embs = [c[0][0] for c in conds]
    extra = {k: v for k, v in conds[0][0][1].items() if k != "attention_mask"}
    pooled = [c[0][1].get("pooled_output") for c in conds]
    if all(p is not None for p in pooled):
        extra["pooled_output"] = torch.cat(pooled)
    if pad:
        n = max(e.shape[1] for e in embs)
        extra["attention_mask"] = torch.stack([(torch.arange(n) < e.shape[1]).to(torch.int64) for e in embs]).reshape(len(embs), n)
        embs = [torch.nn.functional.pad(e, (0, 0, 0, n - e.shape[1])) for e in embs]
    elif len({tuple(e.shape[1:]) for e in embs}) > 1:
        raise NodeInputError(NODE, "target_prompts", "the target prompts encode to different token counts ("
                             f"{', '.join(str(e.shape[1]) for e in embs)}).", "keep every prompt within 75 tokens (Flux: 256 T5 tokens).")
    return [[torch.cat(embs), extra]]


def clip_family(clip):
    """The model family of the CLIP's tokenizers, or the error naming what is supported."""
    family = family_of_clip(clip)
    if family is None:
        raise NodeInputError(NODE, "clip", "this CLIP's text encoders are not those of a family the pack edits.",
                             f"connect the CLIP (text encoder) of a {SUPPORTED} model.")
    return family


def family_prompt_tokens(family, clip, texts: list[str]) -> list:
    """Each prompt's tokens in the family's layout; where the family pads prompts, all to the longest one."""
    prompts = [family.prompt_tokens(clip, t) for t in texts]
    if family.pads_prompts():
        n = max(p.max_len for p in prompts)
        prompts = [family.prompt_tokens(clip, t, n) for t in texts]
    return prompts


def build_control(clip, source_prompt: str, target_prompts: str, mode: str, cross_replace: float, self_replace: float,
                  word_windows: str, reweight: str, blend_words: str, blend_threshold: float, blend_start: float):
    """Parse and check everything now (errors show on this node); return the control and both conditionings."""
    def fail(input_name: str, err: Exception, fix: str) -> NodeInputError:
        return NodeInputError(NODE, input_name, str(err), fix)

    if mode not in MODES:
        raise NodeInputError(NODE, "mode", f"unknown mode '{mode}'.", f"choose one of {', '.join(MODES)}.")
    # The numbers first, each against the bounds its widget has (the core refuses the same values).
    for name, value, top in (("cross_replace", cross_replace, 1.0), ("self_replace", self_replace, 1.0),
                             ("blend_threshold", blend_threshold, BLEND_THRESHOLD_MAX), ("blend_start", blend_start, 1.0)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= top):
            raise NodeInputError(NODE, name, f"{value} is outside 0..{top:g}.",
                                 f"use a value from 0 to {top:g} (the paper uses {PAPER_VALUES[name]:g}).")
    family = clip_family(clip)
    try:
        family.prompt_tokens(clip, source_prompt)
    except PromptError as e:
        raise fail("source_prompt", e, "type the caption used for inversion as plain words.") from e
    lines = [line.strip() for line in target_prompts.splitlines() if line.strip()]
    if not lines:
        raise NodeInputError(NODE, "target_prompts", "no target prompt was given.",
                             "type the edited caption, e.g. the source with one word changed (one edit per line).")
    try:
        source, *targets = family_prompt_tokens(family, clip, [source_prompt, *lines])
    except PromptError as e:
        raise fail("target_prompts", e, "write each edited caption as plain words, one per line.") from e
    try:
        windows = parse_word_windows(word_windows) if word_windows.strip() else {}
    except PromptError as e:
        raise fail("word_windows", e, "write e.g. 'tiger=0.0-0.4; sofa=0.6'.") from e
    try:
        weights = parse_word_values(reweight) if reweight.strip() else []
    except PromptError as e:
        raise fail("reweight", e, "write e.g. 'tiger=2, fluffy=0.5'.") from e
    try:
        blend = parse_word_list(blend_words) if blend_words.strip() else []
    except PromptError as e:
        raise fail("blend_words", e, "write e.g. 'cat, tiger'.") from e
    control = AttentionControl(source=source, targets=targets, mode=mode, cross_replace=cross_replace,
                               word_windows=windows, self_replace=self_replace, reweight=weights, blend_words=blend,
                               blend_start=blend_start, blend_threshold=blend_threshold, family=family.label)
    # Validate now (errors show on this node), one input at a time so the error names the input that is wrong.
    fixes = {"target_prompts": "keep the same number of words for a word swap, or choose mode 'refine' to add or "
                               "remove words.",
             "word_windows": "use words of the target prompts and windows within 0..1 with start <= end.",
             "reweight": "reweight words that appear in the target prompt(s).",
             "blend_words": "choose blend words that appear in the source or target prompt(s)."}
    checks = [("target_prompts", {}), ("word_windows", {"word_windows": windows}), ("reweight", {"reweight": weights}),
              ("blend_words", {"blend_words": blend}), ("blend_threshold", {})]
    for field, only in checks:
        part = dataclasses.replace(control, word_windows=only.get("word_windows", {}), reweight=only.get("reweight", []),
                                   blend_words=only.get("blend_words", []))
        if field == "blend_threshold":
            part = control  # everything together (threshold/start ranges, combinations)
        try:
            build_edit(part, 50)
        except PromptError as e:
            raise fail(field, e, fixes.get(field, "check the local blend settings.")) from e
    source_cond = encode(clip, source_prompt)
    target_cond = stack_conditioning([encode(clip, line) for line in lines], pad=family.pads_prompts())
    control.source_fingerprint = cond_fingerprint(source_cond[0][0])
    control.target_fingerprint = cond_fingerprint(target_cond[0][0])
    return control, source_cond, target_cond


class AttentionController(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NTP_AttentionController",
            display_name=NODE,
            **types.search_aliases('attention control', 'word swap', 'replace words', 'refine', 'reweight', 'local blend', 'edit prompt'),
            category=f"{types.CATEGORY}/editing",
            description="Prompt-to-Prompt: the edited prompts take the source prompt's attention maps so that only "
                        "what the changed words describe changes. Word swap (replace), added words (refine), "
                        "reweighting words and local blend.",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP (text encoder) of the same model (SD 1.x/2.x, SDXL, SD3/SD3.5, Qwen-Image, Flux, Chroma); it tokenises the prompts so words map to tokens."),
                io.String.Input("source_prompt", multiline=True, default="a cat sitting on a table", tooltip="The caption of the photo, exactly as used for DDIM Invert."),
                io.String.Input("target_prompts", multiline=True, default="a tiger sitting on a table", tooltip="The edited caption(s), one per line; each line gives one edit in the output batch."),
                io.Combo.Input("mode", options=list(MODES), default="replace", tooltip="replace: swap words (same number of words, e.g. cat -> tiger). refine: add or remove words ('a table' -> 'a wooden table')."),
                io.Float.Input("cross_replace", default=CROSS_REPLACE, min=0.0, max=1.0, step=0.01, tooltip="Fraction of the steps during which edited prompts use the source's cross-attention maps (0.8 in the paper). Lower lets the edit drift further from the photo's layout; higher keeps more of it."),
                io.Float.Input("self_replace", default=SELF_REPLACE, min=0.0, max=1.0, step=0.01, tooltip="Fraction of the first steps during which edited prompts use the source's self-attention maps (0.4-0.6 in the paper). Higher keeps more structure; too high can block the edit."),
                io.String.Input("word_windows", default="", tooltip="Optional per-word cross-replace windows, e.g. 'tiger=0.0-0.4; sofa=0.6' (a single number x means 0..x). Empty: use cross_replace for all words."),
                io.String.Input("reweight", default="", tooltip="Optional word=factor list applied to the target prompt's attention, e.g. 'tiger=2, fluffy=0.5' (>1 strengthens, <1 weakens, negative removes)."),
                io.String.Input("blend_words", default="", tooltip="Optional local blend words, e.g. 'cat, tiger': only the region these words attend to may change; the rest stays the reconstruction. Empty: no local blend."),
                io.Float.Input("blend_threshold", default=BLEND_THRESHOLD, min=0.0, max=BLEND_THRESHOLD_MAX, step=0.01, tooltip="Local blend mask threshold on the max-normalised attention map (0.3 in the paper). Lower grows the edited region."),
                io.Float.Input("blend_start", default=BLEND_START, min=0.0, max=1.0, step=0.01, tooltip="Fraction of the steps after which local blend starts (0.2 in the paper)."),
            ],
            outputs=[
                types.AttentionControl.Output("control", display_name="control", tooltip="The Prompt-to-Prompt settings for Edited Sample."),
                io.Conditioning.Output("source", display_name="source", tooltip="The source prompt encoded with this CLIP (can feed DDIM Invert and Null-Text Optimize)."),
                io.Conditioning.Output("target", display_name="target", tooltip="The target prompt(s) encoded, one row per line, for Edited Sample."),
            ],
        )

    @classmethod
    def execute(cls, clip, source_prompt, target_prompts, mode, cross_replace, self_replace, word_windows, reweight,
                blend_words, blend_threshold, blend_start) -> io.NodeOutput:
        control, source, target = build_control(clip, source_prompt, target_prompts, mode, cross_replace, self_replace,
                                                word_windows, reweight, blend_words, blend_threshold, blend_start)
        return io.NodeOutput(control, source, target)
