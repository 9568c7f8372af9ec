"""Tiny random-weight Flux-dev and Chroma models (MODEL, CLIP, VAE), built with the host's own classes at test time.

Both are the Flux architecture (``comfy.ldm.flux`` / ``comfy.ldm.chroma``): double-stream blocks (text and image
tokens with their own weights in one joint attention, text first) followed by single-stream blocks (one attention
over the concatenated sequence), 2x2 patches of a 16-channel latent, rotary position embeddings (3 axes).

* Flux-dev: ``comfy.supported_models.Flux(FLUX_UNET_CONFIG)`` -> ``comfy.model_base.Flux`` (``guidance_embed``
  True: the guidance strength is a model input; ``vector_in`` takes the pooled CLIP-L vector). Text:
  ``comfy.text_encoders.flux.FluxTokenizer`` / ``flux_clip()`` (CLIP-L for the pooled vector, T5 for the context;
  T5 padded to 256 tokens), shrunk through the host's ``clip_l_model_config`` / ``t5xxl_model_config`` options.
* Chroma: ``comfy.supported_models.Chroma(CHROMA_UNET_CONFIG)`` -> ``comfy.model_base.Chroma`` (modulations from
  the ``distilled_guidance_layer`` approximator of timestep and guidance, which the host feeds 0; no pooled
  vector). Text: ``comfy.text_encoders.pixart_t5.PixArtTokenizer`` / ``pixart_te()`` (T5 only, no padding).
* VAE: a 16-channel TAESD (``tiny_sd3.build_taesd3_state_dict``) with the Flux latent format's scale and shift
  (``taef1``), calibrated so a model-space latent has mean 0 / std 1.

Sizes: hidden 64, 2 heads of 32 (rotary axes 8 + 12 + 12), 2 double and 2 single blocks, MLP ratio 2; T5
``d_model`` 64 (1 layer, 2 heads), CLIP-L hidden 32 (3 layers; its pooled vector is Flux's ``y``, 32 wide). A 16x16
latent is 64 image tokens: a Flux attention call has 256 + 64 tokens, a Chroma one (prompt length) + 64.

Initialisation (seeded ``torch.Generator``, state-dict order: same seed, bit-identical weights): matrices
N(0, 1/fan_in), biases N(0, 0.01^2), norm scales 1 except the attention key norms (``KEY_NORM_SCALE``: sharper,
less uniform attention after the QK RMS norm), the final projection times ``OUT_SCALE``. Text encoders as the tiny
SD3's (``tiny_sd3.init_sd3_text_encoders_``).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from tiny_model import _draw, _fan_in, prepare_host_cpu
from tiny_sd3 import build_taesd3_state_dict, init_sd3_text_encoders_

T5_WIDTH = 64
CLIP_L_WIDTH = 32
HIDDEN = 64
KEY_NORM_SCALE = 2.0
OUT_SCALE = 0.5
#: The Flux latent format's scale and shift (``comfy.latent_formats.Flux``; the ``taef1`` VAE).
FLUX_SCALE, FLUX_SHIFT = 0.3611, 0.1159

_BLOCKS = {"hidden_size": HIDDEN, "mlp_ratio": 2.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2,
           "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "context_in_dim": T5_WIDTH}
FLUX_UNET_CONFIG = {"image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16,
                    "vec_in_dim": CLIP_L_WIDTH, **_BLOCKS}
# Chroma's in/out channels are the patchified widths (16 x 2 x 2), as the host's detection sets them; the
# approximator takes 16 + 16 + 32 embedding features and outputs the hidden width.
CHROMA_UNET_CONFIG = {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "in_dim": 64, "out_dim": HIDDEN,
                      "hidden_dim": 64, "n_layers": 2, **_BLOCKS}

TE_MODEL_OPTIONS = {
    "dtype": torch.float32,
    "clip_l_model_config": {"num_hidden_layers": 3, "hidden_size": CLIP_L_WIDTH, "intermediate_size": 64,
                            "num_attention_heads": 2, "projection_dim": CLIP_L_WIDTH},
    "t5xxl_model_config": {"d_model": T5_WIDTH, "num_layers": 1, "num_heads": 2, "d_kv": 16, "d_ff": 32},
}


def with_host_fields(config: dict, params_class) -> dict:
    """``config`` plus the fields a newer host's params dataclass requires (0.33.0: ``txt_ids_dims``, Chroma's
    ``vec_in_dim``), set as its detection sets them for Flux.1 / Chroma checkpoints."""
    fields = {f.name for f in dataclasses.fields(params_class)}
    out = dict(config)
    if "txt_ids_dims" in fields:
        out["txt_ids_dims"] = []
    if "vec_in_dim" in fields and "vec_in_dim" not in out:
        out["vec_in_dim"] = None
    return out


def build_flux_state_dict(shapes: dict, seed: int) -> dict:
    gen = torch.Generator().manual_seed(int(seed) * 1000 + 41)
    out = {}
    for name, shape in shapes.items():
        shape = tuple(shape)
        if len(shape) >= 2:
            t = _draw(shape, 1.0 / math.sqrt(_fan_in(shape)), gen)
            if name.startswith("final_layer.linear"):
                t *= OUT_SCALE
        elif "norm" in name:
            t = torch.full(shape, KEY_NORM_SCALE if "key_norm" in name else 1.0)
        else:
            t = _draw(shape, 0.01, gen)
        out[name] = t
    return out


def _build(config_class, unet_config: dict, clip_target, seed: int, params_class):
    prepare_host_cpu()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd

    model_config = config_class(with_host_fields(unet_config, params_class))
    model_config.set_inference_dtype(torch.float32, None)
    base = model_config.get_model({}, "", device=mm.unet_offload_device())
    shapes = {k: tuple(v.shape) for k, v in base.diffusion_model.state_dict().items()}
    base.load_model_weights({"diffusion_model." + k: v for k, v in build_flux_state_dict(shapes, seed).items()},
                            "diffusion_model.")
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    clip = comfy.sd.CLIP(target=clip_target, embedding_directory=None, tokenizer_data={}, model_options=TE_MODEL_OPTIONS)
    init_sd3_text_encoders_(clip.cond_stage_model, seed)
    vae = comfy.sd.VAE(sd=build_taesd3_state_dict(seed, FLUX_SCALE, FLUX_SHIFT))
    return patcher, clip, vae


def flux_clip_target():
    """The host's Flux text stack (CLIP-L for the pooled vector, T5 for the context) as a ClipTarget."""
    from comfy.supported_models_base import ClipTarget
    from comfy.text_encoders import flux

    return ClipTarget(flux.FluxTokenizer, flux.flux_clip())


def build_tiny_flux_clip(seed: int = 0):
    """The tiny Flux text stack alone as a host ``comfy.sd.CLIP`` (the bench's random Flux-dev maps words with it)."""
    prepare_host_cpu()
    import comfy.sd

    clip = comfy.sd.CLIP(target=flux_clip_target(), embedding_directory=None, tokenizer_data={},
                         model_options=TE_MODEL_OPTIONS)
    init_sd3_text_encoders_(clip.cond_stage_model, seed)
    return clip


def build_tiny_flux(seed: int = 0):
    """(MODEL, CLIP, VAE) of the tiny Flux-dev model; deterministic for a given ``seed``."""
    prepare_host_cpu()
    import comfy.supported_models
    from comfy.ldm.flux.model import FluxParams

    return _build(comfy.supported_models.Flux, FLUX_UNET_CONFIG, flux_clip_target(), seed, FluxParams)


def build_tiny_chroma(seed: int = 0):
    """(MODEL, CLIP, VAE) of the tiny Chroma model; deterministic for a given ``seed``."""
    prepare_host_cpu()
    import comfy.supported_models
    from comfy.ldm.chroma.model import ChromaParams
    from comfy.supported_models_base import ClipTarget
    from comfy.text_encoders import pixart_t5

    target = ClipTarget(pixart_t5.PixArtTokenizer, pixart_t5.pixart_te())
    return _build(comfy.supported_models.Chroma, CHROMA_UNET_CONFIG, target, seed, ChromaParams)
