"""Small helpers shared by the node classes."""

from __future__ import annotations

import logging
from typing import Callable

import torch

import comfy.model_management
import comfy.utils

from ..core.attention_edit import AttentionEdit, build_attention_edit
from ..core.values import AttentionControl, Inversion, NullEmbeddings, tensor_fingerprint
from ..host.errors import NodeInputError
from ..host.model_fingerprint import model_fingerprint
from ..host.families import family_of


def single_latent(latent: dict, node: str, input_name: str = "latent", channels: int = 4) -> torch.Tensor:
    """The one latent of a LATENT with the family's ``channels`` ([1, C, h, w], or [1, C, 1, h, w] for video-VAE
    families such as Qwen-Image)."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or samples.ndim not in (4, 5) or (samples.ndim == 5 and samples.shape[2] != 1):
        raise NodeInputError(node, input_name, f"expected a LATENT of shape [batch, {channels}, height/8, width/8].",
                             "connect the output of VAE Encode.")
    if samples.shape[0] != 1:
        raise NodeInputError(node, input_name, f"the latent batch has {samples.shape[0]} images; one image is inverted at a time.",
                             "invert one image per DDIM Invert node (split the batch with Latent From Batch).")
    if samples.shape[1] != channels:
        raise NodeInputError(node, input_name, f"the latent has {samples.shape[1]} channels; this model's latents have "
                             f"{channels}.", "encode the image with the VAE of the same checkpoint.")
    check_finite(samples, node, input_name, "the latent holds NaN or infinite values, as a VAE overflowing in float16 "
                 "gives (the edit would come out black)", LATENT_FIX)
    return samples


#: What to do about a latent with NaN/inf in it (nearly always an fp16 VAE overflow).
LATENT_FIX = ("encode the image again with the VAE in float32 (start ComfyUI with --fp32-vae) or with a VAE that is "
              "safe in float16, then run again.")
#: What to do when the model itself produces NaN/inf.
MODEL_FIX = ("run the model in float32 (start ComfyUI with --force-fp32) or bfloat16 (--bf16-unet), and check that "
             "the checkpoint loads without warnings.")


def non_finite_count(tensor: torch.Tensor) -> int:
    """How many values of ``tensor`` are NaN or infinite (0 for integer tensors)."""
    if not tensor.is_floating_point():
        return 0
    return int((~torch.isfinite(tensor)).sum())


def check_finite(tensor: torch.Tensor, node: str, input_name: str, problem: str, fix: str) -> None:
    """Refuse a tensor holding NaN or inf: ``problem`` (with the count) against ``input_name``."""
    bad = non_finite_count(tensor)
    if bad:
        raise NodeInputError(node, input_name, f"{problem} ({bad} of {tensor.numel()} values).", fix)


def check_finite_inversion(inversion: Inversion, node: str, input_name: str = "inversion") -> None:
    check_finite(inversion.latents, node, input_name, "the inversion holds NaN or infinite latents",
                 "invert again from a finite latent (DDIM Invert refuses NaN latents), or load a saved inversion that "
                 "is not damaged.")


def cond_fingerprint(emb: torch.Tensor) -> str:
    return tensor_fingerprint(emb.to(torch.float32))


def interrupt_check() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()


def step_progress(total: int) -> Callable[[int], None]:
    """A per-step callback: advance a host progress bar of ``total`` steps and honour Cancel."""
    pbar = comfy.utils.ProgressBar(total)

    def on_step(_i: int) -> None:
        pbar.update(1)
        interrupt_check()

    return on_step


def check_guidance(guidance: float, node: str, fix: str, family=None) -> None:
    """Refuse a negative guidance; warn where a guidance-distilled family (Flux-dev) gets classifier-free guidance."""
    if guidance < 0:
        raise NodeInputError(node, "guidance", f"{guidance} is negative.", fix)
    if family is not None and family.guidance_distilled and guidance != 1.0:
        logging.warning("[%s] guidance %.3g on a %s model: it is guidance-distilled (no unconditional branch) and is "
                        "sampled with guidance 1; set its own guidance strength with FluxGuidance on the prompts.",
                        node, guidance, family.label)


def check_inversion(inversion, node: str, input_name: str = "inversion") -> Inversion:
    if not isinstance(inversion, Inversion):
        raise NodeInputError(node, input_name, f"expected an inversion, got {type(inversion).__name__}.",
                             "connect the 'inversion' output of DDIM Invert.")
    return inversion


def check_same_model(model, inversion: Inversion, node: str) -> None:
    """The inversion must come from this checkpoint (LoRA and other weight patches may differ)."""
    if inversion.model_fingerprint and inversion.model_fingerprint != model_fingerprint(model):
        raise NodeInputError(node, "model", "this is not the checkpoint the inversion was made with.",
                             "connect the same Load Checkpoint output that fed DDIM Invert (or invert again with this model).")


def check_same_family(model, family, inversion: Inversion, node: str) -> None:
    """The inversion must be of this model's family (its schedule and latents are the family's)."""
    if inversion.model_family not in family.names:
        raise NodeInputError(node, "inversion", f"it was made with a {inversion.model_family} model, but this model "
                             f"is {family.name_of(model)}.", "connect the model the inversion was made with, or invert "
                             "the photo again with this model.")


def check_source_matches(emb: torch.Tensor, inversion: Inversion, node: str, input_name: str = "source") -> None:
    """``emb`` as ``text_condition`` returns it (packed with the pooled vector for SDXL)."""
    if cond_fingerprint(emb) != inversion.source_fingerprint:
        raise NodeInputError(node, input_name, "this source prompt is not the one DDIM Invert used.",
                             "connect the same source CONDITIONING (same text, same CLIP) to DDIM Invert and this node.")


def checked_source(model, inversion, source, node: str) -> torch.Tensor:
    """The checks every node that continues an inversion makes (model family, inversion, same checkpoint, same
    source prompt); returns the source embedding."""
    family = family_of(model, node)
    check_inversion(inversion, node)
    check_same_family(model, family, inversion, node)
    check_finite_inversion(inversion, node)
    check_same_model(model, inversion, node)
    emb = family.text_condition(model, source, node, "source")
    check_finite(emb, node, "source", "the source prompt embedding holds NaN or infinite values",
                 "encode the caption with this checkpoint's CLIP (CLIP Text Encode).")
    check_source_matches(emb, inversion, node)
    return emb


def check_null_embeddings(null: NullEmbeddings, inversion: Inversion, node: str) -> None:
    """The null embeddings must be finite and made for ``inversion`` (Null-Text Optimize or Fast Inversion)."""
    if not isinstance(null, NullEmbeddings):
        raise NodeInputError(node, "null_embeddings", f"expected null embeddings, got {type(null).__name__}.",
                             "connect the 'null_embeddings' output of Null-Text Optimize.")
    if null.steps != inversion.steps:
        raise NodeInputError(node, "null_embeddings", f"they have {null.steps} steps but the inversion has {inversion.steps}.",
                             "connect the Null-Text Optimize that was fed this DDIM Invert's inversion.")
    if null.inversion_fingerprint != inversion.fingerprint:
        raise NodeInputError(node, "null_embeddings", "they were optimised for another inversion (another image, prompt, model or step count).",
                             "connect the Null-Text Optimize that was fed this DDIM Invert's inversion.")
    check_finite(null.embeddings, node, "null_embeddings", "they hold NaN or infinite values",
                 "optimise them again (Null-Text Optimize refuses a NaN loss) or load a saved inversion that is not damaged.")
    if null.latent_offsets is not None:
        check_finite(null.latent_offsets, node, "null_embeddings", "their Direct Inversion offsets hold NaN or infinite "
                     "values", "run Fast Inversion again from a finite inversion.")


def build_edit(control: AttentionControl, num_steps: int) -> AttentionEdit:
    """The Attention Controller's settings as an edit for ``num_steps`` sampling steps (``PromptError`` when they do
    not fit the prompts)."""
    return build_attention_edit(
        control.source, control.targets, control.mode, num_steps=num_steps, cross_replace=control.cross_replace,
        word_windows=control.word_windows or None, self_replace=control.self_replace,
        reweight=control.reweight or None, blend_words=control.blend_words or None,
        blend_start=control.blend_start, blend_threshold=control.blend_threshold)
