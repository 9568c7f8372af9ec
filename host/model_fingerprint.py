"""A fingerprint of the checkpoint a model came from, to tell inversions of different models apart."""

from __future__ import annotations

import hashlib

import torch

import comfy.utils

# UNet tensors hashed for the model fingerprint (present in every SD 1.x/2.x UNet); the first cross-attention
# key projection is added (it reads the text embedding, so it differs between fine-tunes).
FINGERPRINT_KEYS = ("input_blocks.0.0.weight", "time_embed.0.weight", "out.2.weight")


def model_config_name(patcher) -> str:
    return type(getattr(patcher.model, "model_config", None)).__name__


def _base_weight(patcher, key: str) -> torch.Tensor:
    """The weight as loaded from the checkpoint (before LoRA/weight patches applied in place)."""
    for store in (getattr(patcher, "hook_backup", {}), getattr(patcher, "backup", {})):
        bk = store.get(key) if isinstance(store, dict) else None
        if bk is not None:
            return bk[0]
    return comfy.utils.get_attr(patcher.model, key)


def model_fingerprint(patcher) -> str:
    """A short hash of the model config class name and a few fixed UNet weights (their float16 values).

    Fixed tensors: conv_in (``input_blocks.0.0.weight``), the first time-embedding layer, conv_out (``out.2.weight``)
    and the first cross-attention key projection. Values are hashed after casting to float16, so one checkpoint
    gives the same fingerprint whether the host loads it in float32 or float16. Weight patches (LoRA) are not
    included: the checkpoint's own weights are hashed.
    """
    unet = patcher.model.diffusion_model
    keys = [k for k in FINGERPRINT_KEYS if _has_attr(unet, k)]
    to_k = next((name for name, _ in unet.named_parameters() if name.endswith("attn2.to_k.weight")), None)
    if to_k is not None:
        keys.append(to_k)
    if not keys:  # not a UNet (the transformer families): the first, middle and last weights
        names = [name for name, _ in unet.named_parameters()]
        keys = sorted({names[0], names[len(names) // 2], names[-1]}, key=names.index) if names else []
    h = hashlib.sha256()
    h.update(model_config_name(patcher).encode())
    for k in keys:
        w = _base_weight(patcher, "diffusion_model." + k).detach()
        w = w.to("cpu", torch.float16).contiguous()
        h.update(f"|{k}|{list(w.shape)}|".encode())
        h.update(w.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _has_attr(module, key: str) -> bool:
    try:
        comfy.utils.get_attr(module, key)
        return True
    except AttributeError:
        return False
