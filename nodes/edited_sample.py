"""Edited Sample node: sample from x_T with the per-step null embeddings and Prompt-to-Prompt edits."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import torch

import comfy.model_management
import comfy.patcher_extension
import latent_preview
from comfy_api.latest import io

from ..core.attention_edit import AttentionEdit
from ..core.masks import COMBINE_MODES, LATENT_SCALE, MaskError, blend_rows, combine_masks, prepare_user_mask, to_image_mask
from ..core.prompt_tokens import PromptError
from ..core.values import AttentionControl, EditResult, Inversion, NullEmbeddings
from ..host.compat import multigpu_device_count
from ..host.edit_sampler import WRAPPER_KEY, NullEmbeddingWrapper, ddim_sampler, sample_from_inversion
from ..host.errors import NodeInputError
from ..host.families import family_of
from ..host.text_condition import conditioning_extras, pack, unpack
from ..host.unet import load_model
from . import types
from .common import (MODEL_FIX, build_edit, check_finite, check_guidance, check_null_embeddings, checked_source,
                     cond_fingerprint)

NODE = types.display_name("Edited Sample")


def user_mask(mask, mask_combine: str, n_edits: int, latent_hw: tuple[int, int], node: str = NODE) -> Optional[torch.Tensor]:
    """The user MASK resized to the latent, [n_edits, 1, h, w] (``core.masks.prepare_user_mask``), or None (no mask,
    or no edit rows to restrict)."""
    if mask_combine not in COMBINE_MODES:
        raise NodeInputError(node, "mask_combine", f"unknown value {mask_combine!r}.",
                             f"choose one of {', '.join(COMBINE_MODES)}.")
    if mask is None or n_edits == 0:
        if mask is not None:
            logging.warning("[%s] the mask is not used: there are no edits (connect the Attention Controller's "
                            "target).", node)
        return None
    try:
        m = prepare_user_mask(mask, n_edits, latent_hw)
    except MaskError as e:
        raise NodeInputError(node, "mask", str(e), "connect one MASK (it restricts every edit) or one per target "
                             "prompt (e.g. Load Image Mask, the mask editor of Load Image, Solid Mask), with values "
                             "in 0..1.") from e
    h, w = int(mask.shape[-2]), int(mask.shape[-1])
    lh, lw = latent_hw
    if abs(h * lw - w * lh) > max(h * lw, w * lh) * 0.01:
        logging.warning("[%s] the mask is %dx%d (WxH) but the image is %dx%d: it is stretched to the image.",
                        node, w, h, lw * LATENT_SCALE, lh * LATENT_SCALE)
    return m


def output_mask(result: EditResult, n_edits: int) -> torch.Tensor:
    """Edited Sample's MASK output, [max(n_edits, 1), H, W] at image resolution (latent x 8): the mask applied at the
    last step that had one (all ones where nothing restricted the edit; one mask of zeros without edits)."""
    h, w = result.latent_hw
    if n_edits == 0:
        return torch.zeros(1, h * LATENT_SCALE, w * LATENT_SCALE)
    m = result.edit_mask
    if m is None:
        m = torch.ones(n_edits, 1, h, w)
    return to_image_mask(m.detach().to("cpu", torch.float32))


# ----------------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class EditInputs:
    """Edited Sample's inputs after the checks: the prompt rows to sample and the mask to apply."""

    family: object  # the model's family (``host.families``)
    model: object  # the MODEL
    source: torch.Tensor  # the source embedding as the family's ``text_condition`` gives it (packed with a pooled vector)
    source_rows: torch.Tensor  # its token rows [1, tokens, width]
    target: Optional[torch.Tensor]  # the target token rows [n_edits, tokens, width]; None: reconstruction only
    target_pooled: Optional[torch.Tensor]  # SDXL/SD3: their pooled vectors [n_edits, pooled_dim]
    pooled_dim: int  # the pooled width (SDXL, SD3), 0 without
    user_mask: Optional[torch.Tensor]  # [n_edits, 1, h, w] (``user_mask``) or None
    target_lengths: Optional[list[int]] = None  # real token counts of padded target rows (Qwen-Image)

    @property
    def n_prompts(self) -> int:
        return 1 + (0 if self.target is None else self.target.shape[0])

    @property
    def text_len(self) -> int:
        """Text positions of every row (the longest prompt where prompts are padded)."""
        return max(self.source_rows.shape[1], 0 if self.target is None else self.target.shape[1])

    @property
    def text_lengths(self) -> Optional[list[int]]:
        """Each row's real token count where rows are padded (None: no padding)."""
        if self.target is None or self.target_lengths is None:
            return None
        return [int(self.source_rows.shape[1]), *self.target_lengths]

    def positive(self) -> list:
        """The CONDITIONING of every row: [source, target 1, ...] (padded with zeros to one length where the family
        pads prompts; their padding is masked in attention). What the source packs after its pooled vector (Flux:
        the guidance value) is every row's."""
        rows, n = [self.source_rows], self.text_len
        if self.target is not None:
            rows.append(self.target.to(self.source_rows.device, self.source_rows.dtype))
        rows = [torch.nn.functional.pad(r, (0, 0, 0, n - r.shape[1])) for r in rows]
        tokens = torch.cat(rows)
        pooled = None
        if self.pooled_dim:
            pooled = unpack(self.source, self.pooled_dim)[1]
            if self.target_pooled is not None:
                pooled = torch.cat([pooled, self.target_pooled.to(pooled.device, pooled.dtype)])
        packed = pack(tokens, pooled, self.pooled_dim)
        if self.pooled_dim:
            packed[:, -1, self.pooled_dim:] = self.source[:, -1, self.pooled_dim:].to(packed.dtype)
        return self.family.to_conditioning(packed, self.model)


def check_target(target, src: torch.Tensor, dim: int, pads: bool,
                 node: str) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[list[int]]]:
    """(target token rows, their pooled vectors or None, their real lengths where padded) of the Attention
    Controller's target CONDITIONING; (None, None, None) without one."""
    if target is None:
        return None, None, None
    if not isinstance(target, list) or len(target) != 1:
        raise NodeInputError(node, "target", "expected the 'target' CONDITIONING of the Attention Controller (one entry).",
                             "connect the Attention Controller's target output.")
    tgt = target[0][0]
    extras = conditioning_extras(target)
    lengths = None
    if pads and tgt.shape[-1] == src.shape[-1]:
        mask = extras.get("attention_mask")
        lengths = [int(n) for n in mask.sum(dim=-1).tolist()] if mask is not None else [int(tgt.shape[1])] * tgt.shape[0]
    elif tgt.shape[1:] != src.shape[1:]:
        raise NodeInputError(node, "target", f"its embedding shape {list(tgt.shape[1:])} differs from the source's {list(src.shape[1:])}.",
                             "encode source and target with the same CLIP, each within 75 tokens (Flux: 256 T5 tokens).")
    tgt_pooled = extras.get("pooled_output")
    if dim and (tgt_pooled is None or tuple(tgt_pooled.shape) != (tgt.shape[0], dim)):
        raise NodeInputError(node, "target", f"this model needs one pooled text vector (width {dim}) per target row.",
                             "connect the Attention Controller's target output, made with this checkpoint's CLIP.")
    return tgt, tgt_pooled, lengths


def check_control(control: Optional[AttentionControl], tgt: Optional[torch.Tensor], src: torch.Tensor, node: str,
                  family=None, model=None) -> None:
    """The control must be the one made with this target and the inversion's source prompt, for this family."""
    if control is None:
        return
    if not isinstance(control, AttentionControl):
        raise NodeInputError(node, "control", f"expected an attention control, got {type(control).__name__}.",
                             "connect the 'control' output of the Attention Controller.")
    if family is not None and control.family and control.family != family.label:
        raise NodeInputError(node, "control", f"it was made with the text encoder of a {control.family} model, but "
                             f"the model is {family.name_of(model)}.", "connect the CLIP of this model to the Attention "
                             "Controller.")
    if tgt is None or control.target_fingerprint != cond_fingerprint(tgt):
        raise NodeInputError(node, "target", "it is not the target conditioning this attention control was made for.",
                             "connect the Attention Controller's 'target' output to 'target'.")
    if control.source_fingerprint != cond_fingerprint(src):
        raise NodeInputError(node, "control", "the controller's source prompt differs from the source used for inversion.",
                             "type exactly the inversion's caption as the controller's source_prompt (or feed its 'source' output to DDIM Invert).")


def check_edit_inputs(model, inversion: Inversion, null: NullEmbeddings, source, target,
                      control: Optional[AttentionControl], guidance: float, node: str, mask: Optional[torch.Tensor],
                      mask_combine: str) -> EditInputs:
    """Every check of Edited Sample's inputs, in the order the errors are reported."""
    src_packed = checked_source(model, inversion, source, node)
    family = family_of(model, node)
    dim = family.pooled_width(model)
    src = unpack(src_packed, dim)[0]  # the token rows
    check_null_embeddings(null, inversion, node)
    check_guidance(guidance, node, "use the guidance of Null-Text Optimize or Fast Inversion (7.5; Flux 1).", family)
    if not math.isclose(guidance, null.guidance, rel_tol=1e-6):
        logging.warning("[%s] guidance %.3g differs from the %.3g the null embeddings were optimised for: the "
                        "reconstruction will not match the photo.", node, guidance, null.guidance)
    tgt, tgt_pooled, lengths = check_target(target, src, dim, family.pads_prompts(), node)
    check_control(control, tgt, src, node, family, model)
    if multigpu_device_count(model):
        raise NodeInputError(node, "model", "this model spreads its sampling batch over several GPUs (MultiGPU node), "
                             "so the source and edited prompts would be split across devices.",
                             "connect the model without the MultiGPU node to Edited Sample.")
    n_edits = 0 if tgt is None else tgt.shape[0]
    latent_hw = (int(inversion.x_T.shape[-2]), int(inversion.x_T.shape[-1]))
    return EditInputs(family=family, model=model, source=src_packed, source_rows=src, target=tgt, target_pooled=tgt_pooled,
                      pooled_dim=dim, user_mask=user_mask(mask, mask_combine, n_edits, latent_hw, node),
                      target_lengths=lengths)


# ----------------------------------------------------------------------------------------------------------------
# Patches, the after-step hook, sampling
# ----------------------------------------------------------------------------------------------------------------
def install_patches(model, inversion: Inversion, null: NullEmbeddings, control: Optional[AttentionControl],
                    inputs: EditInputs, node: str) -> tuple[object, object, Optional[AttentionEdit]]:
    """(patched clone of ``model``, the map store of its attention patch, the edit or None): the model loaded and
    cloned, the family's Prompt-to-Prompt attention patch and the per-step null embeddings put on the clone."""
    load_model(model)
    patcher = model.clone()
    edit = None
    if control is not None:
        try:
            edit = build_edit(control, inversion.schedule.steps)
        except PromptError as e:
            raise NodeInputError(node, "control", str(e), "fix the Attention Controller's inputs.") from e
        if edit.max_len != inputs.text_len:
            raise NodeInputError(node, "control", f"its prompts have {edit.max_len} text positions but the "
                                 f"conditioning has {inputs.text_len}.", "connect the CLIP that encoded the source "
                                 "prompt to the Attention Controller.")
    installed = inputs.family.install_edit(patcher, edit, inversion.schedule, inputs.n_prompts, inputs.text_len,
                                           tuple(inversion.x_T.shape), inputs.text_lengths)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY,
                                 NullEmbeddingWrapper(null.embeddings, inversion.schedule, inputs.pooled_dim))
    return patcher, installed.store, edit


class AfterStep:
    """The sampler's hook after each DDIM step: the Direct Inversion offset on the source row, then the local blend
    (reference order) combined with the user mask. ``applied`` is the last mask applied (the MASK output)."""

    def __init__(self, edit: Optional[AttentionEdit], store, null: NullEmbeddings,
                 inversion: Inversion, user_mask: Optional[torch.Tensor], mask_combine: str):
        self.edit = edit
        self.store = store
        self.offsets = null.latent_offsets
        self.schedule = inversion.schedule
        self.user_mask = user_mask
        self.mask_combine = mask_combine
        self.applied: Optional[torch.Tensor] = None

    @property
    def needed(self) -> bool:
        """Whether any step changes the latents (otherwise the sampler runs without the hook)."""
        return self.offsets is not None or (self.edit is not None and self.edit.has_blend) or self.user_mask is not None

    def blend_mask(self, x: torch.Tensor, step: int) -> Optional[torch.Tensor]:
        """The local-blend mask for the latent ``x`` of ``step`` (None before the blend starts or without one)."""
        if self.edit is None or not self.edit.blend_active(step):
            return None
        maps = self.store.mean_maps()
        if maps is None:
            return None
        return self.edit.blend_mask(maps.unsqueeze(1).to(x.device), (x.shape[-2], x.shape[-1]))

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        if self.offsets is not None:  # the offset in the sampler's scaling (SD: DDPM -> sigma scaling)
            x = x.clone()
            x[0:1] += self.schedule.to_sampler(self.offsets[step].to(x.device, x.dtype), step + 1)
        blend = self.blend_mask(x, step)
        # user mask (from step 0) combined with the blend mask (from the blend start): core.masks
        m = combine_masks(None if self.user_mask is None else self.user_mask.to(x.device), blend, self.mask_combine)
        if m is not None:
            self.applied = m
            x = blend_rows(x, m)
        return x


def sample_edit(patcher, inversion: Inversion, null: NullEmbeddings, inputs: EditInputs, guidance: float,
                after_step: AfterStep, preview: bool) -> torch.Tensor:
    """Every row sampled from x_T with the patched model (the hook only where it changes something)."""
    positive = inputs.positive()
    negative = inputs.family.to_conditioning(null.embeddings[0].clone(), inputs.model)
    x_T = inversion.x_T.repeat(inputs.n_prompts, *([1] * (inversion.x_T.ndim - 1)))
    schedule = inversion.schedule
    callback = latent_preview.prepare_callback(patcher, schedule.steps) if preview else None
    return sample_from_inversion(patcher, x_T, schedule, positive, negative, guidance,
                                 ddim_sampler(after_step if after_step.needed else None),
                                 callback, start_in_sampler=inputs.family.starts_in_sampler)


def run_edit(model, inversion: Inversion, null: NullEmbeddings, source, target, control: Optional[AttentionControl],
             guidance: float, node: str = NODE, preview: bool = True, mask: Optional[torch.Tensor] = None,
             mask_combine: str = "intersection") -> tuple[torch.Tensor, EditResult]:
    """Returns the model-space latent batch [reconstruction, edit 1, ...] and attention statistics (with the edit
    mask applied at the last step, ``EditResult.edit_mask``).

    ``mask``: an optional user MASK restricting the edit rows (``core.masks``): applied after every step from step
    0; from the local-blend start on it is combined with the blend mask by ``mask_combine``."""
    inputs = check_edit_inputs(model, inversion, null, source, target, control, guidance, node, mask, mask_combine)
    patcher, store, edit = install_patches(model, inversion, null, control, inputs, node)
    after_step = AfterStep(edit, store, null, inversion, inputs.user_mask, mask_combine)
    out = sample_edit(patcher, inversion, null, inputs, guidance, after_step, preview)
    check_finite(out, node, "model", "sampling returned NaN or infinite values (the images would be black)", MODEL_FIX)
    prompts = [control.source, *control.targets] if control is not None else []
    edit_mask = None if after_step.applied is None else after_step.applied.detach().to("cpu", torch.float32)
    return out, EditResult(cross_maps=store.mean_maps(), map_hw=store.map_hw,
                           latent_hw=(int(inversion.x_T.shape[-2]), int(inversion.x_T.shape[-1])), prompts=prompts,
                           edit_mask=edit_mask)


class EditedSample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NTP_EditedSample",
            display_name=NODE,
            **types.search_aliases('edit image', 'image editing', 'sample', 'reconstruction', 'inversion'),
            category=f"{types.CATEGORY}/editing",
            description="Samples from the inversion's x_T with the optimised null embeddings: row 0 is the "
                        "reconstruction of the photo, rows 1.. the edits (one per target prompt), with "
                        "Prompt-to-Prompt attention control when connected. An optional MASK confines the edits "
                        "(combined with local blend); the 'applied_mask' output is the mask applied. Decode with VAE Decode.",
            inputs=[
                io.Model.Input("model", tooltip="The same model used for inversion (it is cloned and patched; the input stays untouched)."),
                types.Inversion.Input("inversion", tooltip="The 'inversion' output of DDIM Invert (x_T and the schedule)."),
                types.NullEmbeddings.Input("null_embeddings", tooltip="The per-step null embeddings of Null-Text Optimize for this inversion."),
                io.Conditioning.Input("source", tooltip="The source prompt CONDITIONING used for inversion."),
                io.Float.Input("guidance", default=7.5, min=0.0, max=30.0, step=0.1, round=0.01, tooltip="Guidance scale; use the one the null embeddings were optimised with (SD 7.5, SD3.5 4.5, Qwen-Image 4, Chroma 3.5; Flux-dev 1 with Fast Inversion's direct-inversion)."),
                io.Conditioning.Input("target", optional=True, tooltip="The Attention Controller's target CONDITIONING (one row per edit). Without it only the reconstruction is made."),
                types.AttentionControl.Input("control", optional=True, tooltip="The Attention Controller's control. Without it the targets are sampled without attention control (a naive edit)."),
                io.Mask.Input("mask", optional=True, tooltip="Optional MASK confining the edits: where it is 0 each edit keeps the reconstruction, where it is 1 the edit. One for every edit or one per target prompt, any size (see the help page)."),
                io.Combo.Input("mask_combine", options=list(COMBINE_MODES), default="intersection", optional=True, tooltip="With a mask and local-blend words: 'intersection' edits where both allow it, 'union' where either does. Before blend_start, or without blend words, the mask alone applies."),
            ],
            outputs=[
                io.Latent.Output("latent", display_name="latent", tooltip="Batch [reconstruction, edit 1, edit 2, ...] for VAE Decode."),
                types.AttentionMaps.Output("attention", display_name="attention", tooltip="Cross-attention maps of every prompt row averaged over steps, layers and heads (for Attention Maps)."),
                io.Mask.Output("applied_mask", display_name="applied_mask", tooltip="The mask each edit was confined to (local blend combined with the input mask, as applied at the last step), at image size; all ones where nothing restricted the edit."),
            ],
        )

    @classmethod
    def execute(cls, model, inversion, null_embeddings, source, guidance, target=None, control=None, mask=None,
                mask_combine="intersection") -> io.NodeOutput:
        out, stats = run_edit(model, inversion, null_embeddings, source, target, control, guidance, mask=mask,
                              mask_combine=mask_combine)
        device = comfy.model_management.intermediate_device()
        samples = model.model.process_latent_out(out).to(device)
        return io.NodeOutput({"samples": samples}, stats, output_mask(stats, int(out.shape[0]) - 1).to(device))
