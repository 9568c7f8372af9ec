"""A tiny random-weight SDXL-layout model (MODEL, CLIP, VAE), built with the host's own classes at test time.

The host's checkpoint detection only recognises SDXL by the full UNet layout (2.6 B parameters, transformer
depths 0/0/2/2/10/10), far too big for CPU tests, so this model is assembled the way
``comfy.sd.load_state_dict_guess_config`` assembles a detected one, with a small UNet config:

* ``comfy.supported_models.SDXL(unet_config)`` -> ``get_model`` -> ``comfy.model_base.SDXL`` (SDXL latent format,
  ADM ``y`` = [CLIP-G pooled 1280 | six 256-wide size embeddings] = 2816), weights loaded with
  ``load_model_weights``, wrapped in ``comfy.model_patcher.ModelPatcher``;
* ``comfy.sd.CLIP`` with the host's ``SDXLClipModel`` / ``SDXLTokenizer`` (real CLIP-L 768 + CLIP-G 1280 widths,
  vocabulary, penultimate-layer outputs and projected pooled vector), shrunk to 3 layers each (the fewest the penultimate-layer output allows) through the
  host's own ``clip_l_model_config`` / ``clip_g_model_config`` model options;
* ``comfy.sd.VAE`` with the tiny TAESD of ``tiny_model`` (8x down-sampling, 4 channels).

UNet (``openaimodel.UNetModel``, SDXL pattern at a small width): ``model_channels`` 64, ``channel_mult`` [1, 2, 2],
one ResBlock per level, no transformer at the first level, **two** transformer blocks (linear ``proj_in``, 64-wide
heads as SDXL) per SpatialTransformer at the two lower levels and in the middle block, ``context_dim`` 2048,
``adm_in_channels`` 2816. Cross-attention layers: keys ("input", 3|5, 0|1), ("middle", 0, 0|1),
("output", 0..3, 0|1): 14 layers, at 1/2 and 1/4 of the latent size.
"""

from __future__ import annotations

import torch

from tiny_model import build_clip_state_dict, build_taesd_state_dict, build_unet, prepare_host_cpu

SDXL_UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "num_classes": "sequential",
    "adm_in_channels": 2816,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 64,
    "num_res_blocks": [1, 1, 1],
    "transformer_depth": [0, 2, 2],
    "transformer_depth_output": [0, 0, 2, 2, 2, 2],
    "channel_mult": [1, 2, 2],
    "transformer_depth_middle": 2,
    "use_linear_in_transformer": True,
    "context_dim": 2048,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
    "num_heads": -1,
    "num_head_channels": 64,
}

#: The host's own text-encoder config overrides (``<model_name>_model_config``): 3 layers instead of 12 / 32.
TE_MODEL_OPTIONS = {"clip_l_model_config": {"num_hidden_layers": 3}, "clip_g_model_config": {"num_hidden_layers": 3}}


def build_tiny_sdxl(seed: int = 0, dtype: torch.dtype = torch.float32):
    """(MODEL patcher, CLIP, VAE) of the tiny SDXL-layout model; deterministic for a given ``seed``."""
    prepare_host_cpu()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models

    unet = build_unet(seed, config=SDXL_UNET_CONFIG)
    unet_sd = {k: v.detach().to(dtype).clone() for k, v in unet.state_dict().items()}
    del unet
    model_config = comfy.supported_models.SDXL(SDXL_UNET_CONFIG)
    model_config.set_inference_dtype(dtype, None)
    base = model_config.get_model({}, "", device=mm.unet_offload_device())
    base.load_model_weights(unet_sd, "")
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())

    clip = comfy.sd.CLIP(model_config.clip_target({}), embedding_directory=None, model_options=TE_MODEL_OPTIONS)
    encoders = clip.cond_stage_model
    encoders.clip_l.load_sd(build_clip_state_dict(seed, "sd1_clip_config.json", {"num_hidden_layers": 3}, projection=True))
    encoders.clip_g.load_sd(build_clip_state_dict(seed, "clip_config_bigg.json", {"num_hidden_layers": 3}, projection=True))

    vae = comfy.sd.VAE(sd=build_taesd_state_dict(seed))
    return patcher, clip, vae
