"""A tiny random-weight SD3-layout model (MODEL, CLIP, VAE), built with the host's own classes at test time.

SD3 is a joint-attention transformer (MMDiT): text and image tokens share one attention per block, so there is no
cross-attention layer to patch (see /work/shared/docs/TRANSFORMERS.md). Real checkpoints are 2 B+ parameters plus
a 4.7 B-parameter T5-XXL, far too big for CPU tests, so this model is assembled the way
``comfy.sd.load_state_dict_guess_config`` assembles a detected one, with a small config:

* ``comfy.supported_models.SD3(SD3_UNET_CONFIG)`` -> ``get_model({})`` -> ``comfy.model_base.SD3``
  (``OpenAISignatureMMDITWrapper``, SD3 latent format: 16 channels, scale 1.5305, shift 0.0609; flow-matching
  ``model_sampling`` with the config's shift 3, so 2 "simple" steps are sigmas [1, 0.75, 0]), weights loaded from
  a seeded state dict with ``load_model_weights``, wrapped in ``comfy.model_patcher.ModelPatcher``;
* ``comfy.sd.CLIP`` with the host's ``sd3_clip.SD3Tokenizer`` / ``sd3_clip.sd3_clip(clip_l, clip_g, t5)`` (real
  tokenizers from the host folder, the host's CLIP-L / CLIP-G / T5 classes and its SD3 joining rule), shrunk
  through the host's own ``clip_l_model_config`` / ``clip_g_model_config`` / ``t5xxl_model_config`` model
  options and initialised in place from ``seed``;
* ``comfy.sd.VAE`` with a TAESD of 16 latent channels (detected by the host from ``taesd_decoder.1.weight``),
  ``vae_scale`` / ``vae_shift`` as the host's ``VAELoader`` sets them for ``taesd3`` (1.5305 / 0.0609), so
  ``VAEEncode`` of a [1, 128, 128, 3] image gives a [1, 16, 16, 16] latent.

Text stack (``TE_MODEL_OPTIONS``)
---------------------------------
* CLIP-L: hidden 32, 2 heads, MLP 64, **3 layers** (SD3 reads ``layer_idx`` -2 and needs more layers than that);
  pooled output = final-layer-normed EOS state, unprojected (SD3 uses ``return_projected_pooled=False``): 32 wide.
* CLIP-G: hidden 64, 2 heads, MLP 128, 3 layers, ``projection_dim`` 64 (pooled output projected): 64 wide.
  L and G differ in width so that swapping them would show.
* T5-XXL: ``d_model`` **4096** (it must stay 4096: the host pads CLIP-L|G to 4096 columns and joins T5 along the
  sequence), 1 layer, 2 heads, ``d_kv`` 16, ``d_ff`` 32. Its 32128 x 4096 embedding is the only large tensor
  (131 M parameters, 0.5 GiB in float32).

CONDITIONING of ``CLIPTextEncode`` (for a short prompt and for ``""`` alike): context [1, 154, 4096] = 77 CLIP
tokens (columns 0:32 CLIP-L, 32:96 CLIP-G, the rest zero) then 77 T5 tokens; ``pooled_output`` [1, 96]
(= ``SD3_POOLED_WIDTH``); no attention mask. Equal lengths, so cond and uncond run as one batch-2 model call.

MMDiT (``SD3_UNET_CONFIG``)
---------------------------
``depth`` 2 -> hidden 128 (the host fixes 64 per head), 2 heads of 64, 2 joint blocks (the last one's context
side is ``pre_only``: it only supplies keys/values), patch 2, 16 channels in and out, ``context_embedder`` 4096 ->
128, ``adm_in_channels`` 96, no qk-norm, no MMDiT-X self-attention (plain SD3 Medium layout). ``pos_embed`` is a
fixed 2-D sin-cos table for a 32 x 32 patch grid (``pos_embed_max_size`` 32: latents up to 64 x 64, images up to
512 px), centre-cropped by the host as for real SD3. A 16 x 16 latent is 64 image tokens, so a joint attention
call has 154 + 64 = 218 tokens (text first).

Initialisation
--------------
The host's ``comfy.ops`` layers skip weight initialisation and SD3's ``pos_embed`` buffer is ``torch.empty``, so
every parameter and buffer is set here from ``torch.Generator`` objects seeded from ``seed``, in state-dict order
(same seed -> bit-identical weights and outputs):

* MMDiT: linear / conv weights N(0, 1/fan_in), biases N(0, 0.01^2) (``context_embedder`` bias 0); the key third of
  every ``attn.qkv`` times ``ATTN_KEY_SCALE`` (sharper, less uniform attention); ``final_layer.linear`` times
  ``OUT_SCALE`` (nonzero: the output depends on the latent, the time and the text).
* CLIP-L/G: token embeddings N(0, 1) and position embeddings N(0, 0.1^2) (so the penultimate states that enter the
  context are O(1) rather than HF's 0.02, which would leave the CLIP tokens nearly blank), linear weights
  N(0, 1/fan_in), biases 0, layer norms weight 1 / bias 0.
* T5: the HF T5 initialiser (embedding N(0, 1), ``q`` N(0, 1/(d_model d_kv)), ``k``/``v``/``wi`` N(0, 1/d_model),
  ``o`` N(0, 1/(heads d_kv)), ``wo`` N(0, 1/d_ff), relative attention bias N(0, 1/d_model)), RMS norms weight 1.
* TAESD (16 channels): He init times 0.7, then calibrated on ``tiny_model.calibration_image()`` so the encoder's
  output (= the model-space latent, since ``vae_scale``/``vae_shift`` cancel the latent format) has zero mean and
  std 1 per channel, and the decoder returns an image of mean 0.5, std 0.25.

Measured (CPU, seed 0; identical on ComfyUI 0.3.64 and 0.33.0, bit for bit)
---------------------------------------------------------------------------
* Context: CLIP part std about 2 (L and G), T5 part RMS 1, ``pooled_output`` std about 1.
* ``rel(a, b) = ||v_a - v_b|| / ||v_uncond||`` of ``apply_model`` on a fixed noise latent, sigma 1 / 0.75 / 0.3:
  cond vs ``""`` 0.18 / 0.12 / 0.06; "a cat ..." vs "a dog ..." 0.10 / 0.07 / 0.04; cat vs "a mountain at sunset"
  0.19 / 0.13 / 0.07. Output std about 1.
* Joint attention (2 steps, both blocks): image queries put 26-63 % of their probability on the 154 text tokens,
  mean top probability 0.16-0.25, 20-45 effective tokens of 218.
* 2-step Euler at cfg 4.5 from seeded noise on a 16 x 16 latent: std 0.87; the result moves by 0.31 (relative) for
  cat -> dog, 0.61 for cat -> mountain, 0.67 for cat -> "".
* Build about 1 s on an idle 2-core CPU (5-7 s when the box is busy; the T5 embedding's 131 M normal draws and the
  TAESD calibration's first-convolution warm-up dominate); about 0.55 GiB resident per instance (the T5
  embedding). Encoding a prompt and a 2-step sample take about 0.02 s each when idle.

Note ``EmptyLatentImage`` still makes 4-channel latents (``KSampler`` widens all-zero ones); SD3 latents are
[B, 16, H/8, W/8] (the host's ``EmptySD3LatentImage``).
As with checkpoint-loaded models, the MMDiT weights keep ``requires_grad`` on 0.3.64 (only 0.33.0's ``BaseModel``
turns it off) and the VAE's on both hosts: outside ``torch.inference_mode()`` their outputs carry autograd graphs.
"""

from __future__ import annotations

import math

import torch

from tiny_model import _draw, _fan_in, calibration_image, init_taesd_, prepare_host_cpu

#: Text-encoder widths (``pooled_output`` = CLIP-L | CLIP-G).
CLIP_L_WIDTH = 32
CLIP_G_WIDTH = 64
SD3_POOLED_WIDTH = CLIP_L_WIDTH + CLIP_G_WIDTH
#: Context width the host's SD3 text stack always produces (CLIP-L|G zero-padded to T5-XXL's d_model).
SD3_CONTEXT_WIDTH = 4096
#: Hidden width of the MMDiT (64 * depth).
SD3_HIDDEN = 128

#: MMDiT config in the form the host's detection builds for SD3 checkpoints (comfy/model_detection.py).
SD3_UNET_CONFIG = {
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "depth": 2,  # hidden 64 * depth = 128, num_heads = depth = 2, num_blocks = depth = 2
    "input_size": None,
    "adm_in_channels": SD3_POOLED_WIDTH,
    "context_embedder_config": {
        "target": "torch.nn.Linear",
        "params": {"in_features": SD3_CONTEXT_WIDTH, "out_features": SD3_HIDDEN},
    },
    "num_patches": 32 * 32,
    "pos_embed_max_size": 32,
    "pos_embed_scaling_factor": None,
    "x_block_self_attn_layers": [],
}

#: The host's text-encoder config overrides (``<model_name>_model_config``), plus float32 (CPU defaults to fp16).
TE_MODEL_OPTIONS = {
    "dtype": torch.float32,
    "clip_l_model_config": {"num_hidden_layers": 3, "hidden_size": CLIP_L_WIDTH, "intermediate_size": 64,
                            "num_attention_heads": 2, "projection_dim": CLIP_L_WIDTH},
    "clip_g_model_config": {"num_hidden_layers": 3, "hidden_size": CLIP_G_WIDTH, "intermediate_size": 128,
                            "num_attention_heads": 2, "projection_dim": CLIP_G_WIDTH},
    "t5xxl_model_config": {"num_layers": 1, "num_heads": 2, "d_kv": 16, "d_ff": 32},
}

#: Initialisation scales (see module docstring).
ATTN_KEY_SCALE = 2.0
OUT_SCALE = 0.5
CLIP_TOKEN_STD = 1.0
CLIP_POSITION_STD = 0.1

#: ``vae_scale`` / ``vae_shift`` the host's ``VAELoader`` gives ``taesd3`` (= the SD3 latent format).
TAESD3_SCALE = 1.5305
TAESD3_SHIFT = 0.0609


def _sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """[1, grid*grid, dim] 2-D sin-cos position table (MAE / DiT layout: first half from the column, second from
    the row; row-major tokens), float32."""
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def one(pos):
        out = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([one(cols), one(rows)], dim=1).unsqueeze(0).to(torch.float32)


def build_mmdit_state_dict(shapes: dict, seed: int = 0) -> dict:
    """Seeded float32 state dict for the MMDiT whose parameter/buffer shapes are ``shapes`` (name -> shape, names
    without the ``diffusion_model.`` prefix, in state-dict order)."""
    gen = torch.Generator().manual_seed(int(seed) * 1000 + 21)
    out = {}
    for name, shape in shapes.items():
        shape = tuple(shape)
        leaf = name.rsplit(".", 1)[-1]
        if name == "pos_embed":
            out[name] = _sincos_pos_embed(shape[-1], int(round(math.sqrt(shape[1]))))
            continue
        if leaf == "weight" and len(shape) >= 2:
            t = _draw(shape, 1.0 / math.sqrt(_fan_in(shape)), gen)
            if name.endswith("attn.qkv.weight"):
                t[shape[0] // 3: 2 * shape[0] // 3] *= ATTN_KEY_SCALE
            if name == "final_layer.linear.weight":
                t *= OUT_SCALE
        elif name == "context_embedder.bias":
            t = torch.zeros(shape)
        elif leaf == "bias":
            t = _draw(shape, 0.01, gen)
        else:
            raise ValueError(f"tiny SD3: no initialisation rule for {name} {shape}")
        out[name] = t
    return out


def init_sd3_text_encoders_(encoders: torch.nn.Module, seed: int = 0) -> None:
    """Initialise every parameter and buffer of the host's ``SD3ClipModel`` (``clip.cond_stage_model``) in place."""
    t5_cfg = TE_MODEL_OPTIONS["t5xxl_model_config"]
    gen = torch.Generator().manual_seed(int(seed) * 1000 + 22)
    with torch.no_grad():
        for name, p in encoders.state_dict(keep_vars=True).items():
            leaf = name.rsplit(".", 1)[-1]
            shape = tuple(p.shape)
            if leaf == "logit_scale":
                t = torch.full(shape, 4.6055)  # the host's constant (unused by SD3)
            elif name.startswith("t5xxl."):
                if "layer_norm" in name:
                    t = torch.ones(shape)
                elif name.endswith("shared.weight"):  # the 32128 x 4096 embedding: drawn in place (0.5 GiB)
                    p.normal_(0.0, 1.0, generator=gen)
                    continue
                elif name.endswith("SelfAttention.q.weight"):
                    t = _draw(shape, 1.0 / math.sqrt(shape[1] * t5_cfg["d_kv"]), gen)
                elif name.endswith("SelfAttention.o.weight") or name.endswith("DenseReluDense.wo.weight"):
                    t = _draw(shape, 1.0 / math.sqrt(shape[1]), gen)
                elif name.endswith("relative_attention_bias.weight"):
                    t = _draw(shape, 1.0 / math.sqrt(SD3_CONTEXT_WIDTH), gen)
                elif leaf == "weight":  # k, v, wi_0, wi_1: [out, d_model]
                    t = _draw(shape, 1.0 / math.sqrt(shape[1]), gen)
                else:
                    raise ValueError(f"tiny SD3: no initialisation rule for {name} {shape}")
            elif "layer_norm" in name:
                t = torch.ones(shape) if leaf == "weight" else torch.zeros(shape)
            elif name.endswith("token_embedding.weight"):
                t = _draw(shape, CLIP_TOKEN_STD, gen)
            elif name.endswith("position_embedding.weight"):
                t = _draw(shape, CLIP_POSITION_STD, gen)
            elif leaf == "bias":
                t = torch.zeros(shape)
            elif leaf == "weight" and len(shape) == 2:  # q/k/v/out_proj, fc1/fc2, text_projection
                t = _draw(shape, 1.0 / math.sqrt(shape[1]), gen)
            else:
                raise ValueError(f"tiny SD3: no initialisation rule for {name} {shape}")
            p.copy_(t.to(p.dtype))


def build_taesd3_state_dict(seed: int = 0, scale: float = TAESD3_SCALE, shift: float = TAESD3_SHIFT) -> dict:
    """State dict (keys without prefix, float32) of the host's TAESD with 16 latent channels and the ``taesd3``
    scale/shift (or those given: the latent format's), calibrated on ``calibration_image()`` (model-space latent
    mean 0 / std 1 per channel; decoded image mean 0.5 / std 0.25)."""
    prepare_host_cpu()
    from comfy.taesd.taesd import TAESD

    model = TAESD(latent_channels=16)
    init_taesd_(model, torch.Generator().manual_seed(int(seed) * 1000 + 23), scale, shift)
    with torch.no_grad():
        enc_out, dec_out = model.taesd_encoder[-1], model.taesd_decoder[-1]
        image = calibration_image()
        z = model.taesd_encoder(image * 0.5 + 0.5)  # model-space latent (vae_scale/vae_shift cancel the format)
        mean, std = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
        enc_out.weight.mul_((1.0 / std).view(-1, 1, 1, 1))
        enc_out.bias.copy_(-mean / std)
        y = model.taesd_decoder(model.taesd_encoder(image * 0.5 + 0.5))
        mean, std = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3))
        dec_out.weight.mul_((0.25 / std).view(-1, 1, 1, 1))
        dec_out.bias.copy_(0.5 - mean * 0.25 / std)
    return {k: v.detach().to(torch.float32).clone() for k, v in model.state_dict().items()}


def build_tiny_sd3_clip(seed: int = 0):
    """The tiny SD3 text stack as a host ``comfy.sd.CLIP`` (float32), initialised from ``seed``."""
    prepare_host_cpu()
    import comfy.sd
    from comfy.supported_models_base import ClipTarget
    from comfy.text_encoders import sd3_clip

    target = ClipTarget(sd3_clip.SD3Tokenizer, sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=True))
    clip = comfy.sd.CLIP(target=target, embedding_directory=None, tokenizer_data={}, model_options=TE_MODEL_OPTIONS)
    init_sd3_text_encoders_(clip.cond_stage_model, seed)
    return clip


def build_tiny_sd3(seed: int = 0, dtype: torch.dtype = torch.float32):
    """(MODEL patcher, CLIP, VAE) of the tiny SD3-layout model; deterministic for a given ``seed``.

    ``dtype`` is the MMDiT's weight/inference dtype; the text encoders and the VAE are always float32.
    """
    prepare_host_cpu()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models

    model_config = comfy.supported_models.SD3(dict(SD3_UNET_CONFIG))
    model_config.set_inference_dtype(dtype, None)
    base = model_config.get_model({}, "", device=mm.unet_offload_device())
    shapes = {k: tuple(v.shape) for k, v in base.diffusion_model.state_dict().items()}
    unet_sd = {"diffusion_model." + k: v.to(dtype) for k, v in build_mmdit_state_dict(shapes, seed).items()}
    base.load_model_weights(unet_sd, "diffusion_model.")
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())

    clip = build_tiny_sd3_clip(seed)
    vae = comfy.sd.VAE(sd=build_taesd3_state_dict(seed))
    return patcher, clip, vae
