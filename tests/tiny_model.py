"""A tiny random-weight Stable Diffusion 1.x checkpoint, built with the host's own classes.

``build_tiny_sd15_checkpoint(path, seed=0)`` writes a ``.safetensors`` file that ComfyUI's
``comfy.sd.load_checkpoint_guess_config`` (and so the ``CheckpointLoaderSimple`` node) loads and detects as
**SD1.x** (model config ``SD15``, latent format ``SD15``). Nothing is downloaded; the weights are random and
fully determined by ``seed``.

Layout
------
UNet (``comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel``, key prefix ``model.diffusion_model.``):

* ``model_channels`` 320, ``context_dim`` 768, conv ``proj_in`` (no linear-in-transformer), no ADM, 8 heads of
  40 channels: the values SD1.x detection keys on. ``channel_mult`` [1, 1, 1], one ResBlock per level,
  one SpatialTransformer (depth 1: self-attention ``attn1`` + cross-attention ``attn2`` + GEGLU FF) after every
  ResBlock, in the middle block and in every output block. 3 resolution levels, so with a latent of HxW the
  cross-attention maps come in three sizes (16x16 latent: 256, 64 and 16 query tokens)::

      input_blocks.0   conv_in 4 -> 320                              H
      input_blocks.1   ResBlock + SpatialTransformer   ("input", 1)  H       (attn2 queries: H*W)
      input_blocks.2   Downsample                                    H/2
      input_blocks.3   ResBlock + SpatialTransformer   ("input", 3)  H/2     (H*W/4)
      input_blocks.4   Downsample                                    H/4
      input_blocks.5   ResBlock + SpatialTransformer   ("input", 5)  H/4     (H*W/16)
      middle_block     ResBlock + SpatialTransformer + ResBlock  ("middle", 0)   H/4
      output_blocks.0  ResBlock + SpatialTransformer   ("output", 0) H/4
      output_blocks.1  ResBlock + SpatialTransformer + Upsample  ("output", 1)  H/4 -> H/2
      output_blocks.2  ResBlock + SpatialTransformer   ("output", 2) H/2
      output_blocks.3  ResBlock + SpatialTransformer + Upsample  ("output", 3)  H/2 -> H
      output_blocks.4  ResBlock + SpatialTransformer   ("output", 4) H
      output_blocks.5  ResBlock + SpatialTransformer   ("output", 5) H
      out              GroupNorm, SiLU, conv 320 -> 4

  That is 10 cross-attention layers (``set_model_attn2_replace`` keys as shown, transformer index 0).
  Note these keys differ from real SD1.5's (("input", 1|2|4|5|7|8), ...): enumerate the blocks.

CLIP text encoder (host's ``comfy.clip_model.CLIPTextModel`` with its fixed ``sd1_clip_config.json``: 12 layers,
width 768, vocabulary 49408; key prefix ``cond_stage_model.transformer.``). It must keep all 12 layers: the host
builds 12 and loads non-strictly, so missing layers would stay uninitialised. Stored in float16 (the host runs
the text encoder in float16 on CPU anyway), which halves the file.

VAE: TAESD (host's ``comfy.taesd.taesd.TAESD``, keys ``first_stage_model.taesd_encoder.*``,
``first_stage_model.taesd_decoder.*``, ``vae_scale``, ``vae_shift``): 8x down/up-sampling, 4 latent channels.

Initialisation
--------------
The host's ``comfy.ops`` layers skip weight initialisation, so every tensor is drawn explicitly from a
``torch.Generator`` seeded from ``seed``, in state-dict key order (identical files for identical seeds).
UNet: linear/conv weights ~ N(0, 1/fan_in), biases ~ N(0, 0.01^2), norms weight 1 / bias 0. CLIP: the HF
initialiser (N(0, 0.02^2) weights and token embeddings, N(0, 0.01^2) position embeddings, zero biases); no
``text_projection`` (real SD1 files have none and the host drops it for SD1). TAESD: see
``build_taesd_state_dict`` (He init, then calibrated so a smooth image encodes to model-space std 1).

Text path and output scale (measured, 16x16 latent; see tests/test_tiny_model.py)
----------------------------------------------------------------------------------
``rel(a, b) = ||eps_a - eps_b|| / ||eps_uncond||`` with eps from ``apply_model`` at sigma 0.1 ... 14:

* ``attn2_key_scale`` (3) multiplies every ``attn2.to_k``: attention logits std about 2-3 instead of 1, so
  attention is far from uniform over the 77 tokens (23-46 effective tokens, mean top probability 0.09-0.21) and
  per-word maps vary over space. Larger scales (5-8) made the guidance-1 DDIM reconstruction 2-4x worse.
* ``attn2_out_scale`` (4) multiplies every ``attn2.to_out.0`` weight: a larger text contribution.
  With both at 1: cond/uncond 0.32, cat/dog 0.12. With (3, 4): cond/uncond 0.50-0.54 (a prompt vs ``""``),
  cat/dog (one word swapped) 0.17-0.19, cat/mountain 0.51-0.56, at every sigma.
* ``out_scale`` (0.5) multiplies the final conv (eps std about 0.31). The DDIM-inversion error of a random
  UNet grows with eps size: hand-written DDIM, smooth latent of std 1, relative reconstruction MSE at
  guidance 1: 5 / 10 / 20 steps 0.032 / 0.021 / 0.0078 (out_scale 1: 0.110 / 0.056 / 0.020). At guidance 7.5
  without null-text the same 10-step reconstruction is off by about 80x the latent's energy (finite).
"""

from __future__ import annotations

import math
import os
import sys

import torch

#: Defaults chosen by measurement (see module docstring and tests/test_tiny_model.py).
DEFAULT_ATTN2_KEY_SCALE = 3.0
DEFAULT_ATTN2_OUT_SCALE = 4.0
DEFAULT_OUT_SCALE = 0.5

#: UNet configuration exactly as the host's detection reconstructs it from the saved keys
#: (plus the SD15 extra config num_heads 8 / num_head_channels -1).
UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [1, 1, 1],
    "transformer_depth": [1, 1, 1],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1],
    "channel_mult": [1, 1, 1],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": 768,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
    "num_heads": 8,
    "num_head_channels": -1,
}


def prepare_host_cpu() -> None:
    """Make the host run on CPU if ``comfy.model_management`` has not been imported yet.

    Requires the ComfyUI checkout on ``sys.path``. ``comfy.options.args_parsing`` stays False, so the host
    parses no command line (``parse_args([])``).
    """
    import comfy.options  # noqa: F401  (must precede comfy.cli_args)
    from comfy.cli_args import args

    if "comfy.model_management" not in sys.modules:
        args.cpu = True


def _fan_in(shape) -> int:
    return int(math.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def _draw(shape, std: float, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float32) * std


def build_unet(
    seed: int = 0,
    attn2_key_scale: float = DEFAULT_ATTN2_KEY_SCALE,
    attn2_out_scale: float = DEFAULT_ATTN2_OUT_SCALE,
    out_scale: float = DEFAULT_OUT_SCALE,
    config: dict = UNET_CONFIG,
):
    """The host's UNetModel with the tiny layout (``config``), initialised from ``seed`` (float32, CPU)."""
    prepare_host_cpu()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    cfg = dict(config)
    cfg["transformer_depth"] = list(cfg["transformer_depth"])
    cfg["transformer_depth_output"] = list(cfg["transformer_depth_output"])
    unet = UNetModel(**cfg, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
    gen = torch.Generator().manual_seed(int(seed) * 1000 + 1)
    with torch.no_grad():
        for name, p in unet.state_dict(keep_vars=True).items():
            leaf = name.rsplit(".", 1)[-1]
            parent = name.rsplit(".", 1)[0]
            module = unet.get_submodule(parent)
            if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                p.copy_(torch.ones_like(p) if leaf == "weight" else torch.zeros_like(p))
            elif leaf == "weight":
                p.copy_(_draw(p.shape, 1.0 / math.sqrt(_fan_in(p.shape)), gen))
            else:
                p.copy_(_draw(p.shape, 0.01, gen))
        for name, module in unet.named_modules():
            if name.endswith(".attn2"):
                module.to_k.weight.mul_(attn2_key_scale)
                module.to_out[0].weight.mul_(attn2_out_scale)
        unet.out[2].weight.mul_(out_scale)
        unet.out[2].bias.zero_()
    return unet


def build_clip_state_dict(seed: int = 0, config_file: str = "sd1_clip_config.json", overrides: dict | None = None,
                          projection: bool = False) -> dict:
    """State dict (keys without prefix, float16) of the host's CLIP text model of ``config_file`` (a config shipped
    with the host; default the 12-layer CLIP-L of SD1) with ``overrides`` applied (e.g. fewer layers)."""
    prepare_host_cpu()
    import json

    import comfy.clip_model
    import comfy.ops
    import comfy.sd1_clip

    cfg_path = os.path.join(os.path.dirname(os.path.realpath(comfy.sd1_clip.__file__)), config_file)
    with open(cfg_path) as f:
        config = json.load(f)
    config.update(overrides or {})
    # only the key names and shapes are needed: build on the meta device (no memory, no init)
    model = comfy.clip_model.CLIPTextModel(config, torch.float32, "meta", comfy.ops.disable_weight_init)
    gen = torch.Generator().manual_seed(int(seed) * 1000 + 2 + (7 if projection else 0))
    out = {}
    for name, p in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if name.startswith("text_projection") and not projection:
            continue  # real SD1 files have none; the host drops it for SD1 anyway (pooled output unused)
        if "layer_norm" in name or "final_layer_norm" in name:
            t = torch.ones(p.shape) if leaf == "weight" else torch.zeros(p.shape)
        elif name.endswith("position_embedding.weight"):
            t = _draw(p.shape, 0.01, gen)
        elif leaf == "bias":
            t = torch.zeros(p.shape)
        else:
            t = _draw(p.shape, 0.02, gen)
        out[name] = t.to(torch.float16)
    return out


def calibration_image(size: int = 64) -> torch.Tensor:
    """A smooth deterministic RGB image [1, 3, size, size] in [-1, 1] (VAE input scale): gradient plus a blob."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    blob = torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) / 0.15)
    rgb = torch.stack([0.5 + 0.3 * xx + 0.3 * blob, 0.5 + 0.3 * yy - 0.2 * blob, 0.5 + 0.2 * xx * yy + 0.1 * blob])
    return (rgb.clamp(0, 1) * 2 - 1).unsqueeze(0)


def init_taesd_(model: torch.nn.Module, gen: torch.Generator, scale: float = 1.0, shift: float = 0.0) -> None:
    """Fill the host's TAESD in place, in state-dict order: convs He init times 0.7, biases 0, ``vae_scale`` /
    ``vae_shift`` as given, GroupNorm weights 1 (only in ``use_midblock_gn`` variants, not built here)."""
    with torch.no_grad():
        for name, p in model.state_dict(keep_vars=True).items():
            leaf = name.rsplit(".", 1)[-1]
            if name == "vae_scale":
                p.fill_(scale)
            elif name == "vae_shift":
                p.fill_(shift)
            elif leaf == "weight" and p.dim() == 4:
                p.copy_(_draw(p.shape, 0.7 * math.sqrt(2.0 / _fan_in(p.shape)), gen))
            elif leaf == "weight":
                p.fill_(1.0)
            else:
                p.zero_()


def build_taesd_state_dict(seed: int = 0) -> dict:
    """State dict (keys without prefix, float32) of the host's TAESD, calibrated on ``calibration_image()``.

    Convs get He init times 0.7 (ReLU net: smaller gains vanish, larger explode through ~40 convs). The last
    encoder conv is then rescaled and biased so the calibration image encodes to raw latents of zero mean and
    std 1/0.18215 per channel (std 1 in model space, like SD1 latents); the last decoder conv so that latent
    decodes to an image of mean 0.5, std 0.25 (not saturated at 0/1).
    """
    prepare_host_cpu()
    from comfy.taesd.taesd import TAESD

    model = TAESD(latent_channels=4)
    init_taesd_(model, torch.Generator().manual_seed(int(seed) * 1000 + 3))
    with torch.no_grad():
        enc_out, dec_out = model.taesd_encoder[-1], model.taesd_decoder[-1]
        z = model.encode(calibration_image())
        mean, std = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
        enc_out.weight.mul_((1.0 / 0.18215 / std).view(-1, 1, 1, 1))
        enc_out.bias.copy_(-mean / std / 0.18215)
        z = model.encode(calibration_image())
        y = model.taesd_decoder((z - model.vae_shift) * model.vae_scale)
        mean, std = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3))
        dec_out.weight.mul_((0.25 / std).view(-1, 1, 1, 1))
        dec_out.bias.copy_(0.5 - mean * 0.25 / std)
    return {k: v.detach().to(torch.float32).clone() for k, v in model.state_dict().items()}


def build_state_dict(seed: int = 0, **unet_kwargs) -> dict:
    """The full checkpoint state dict with the host's key prefixes."""
    sd = {}
    unet = build_unet(seed, **unet_kwargs)
    for k, v in unet.state_dict().items():
        sd["model.diffusion_model." + k] = v.detach().to(torch.float32).contiguous()
    del unet
    for k, v in build_clip_state_dict(seed).items():
        sd["cond_stage_model.transformer." + k] = v.contiguous()
    for k, v in build_taesd_state_dict(seed).items():
        sd["first_stage_model." + k] = v.contiguous()
    return sd


def build_tiny_sd15_checkpoint(path: str, seed: int = 0, **unet_kwargs) -> str:
    """Build the tiny SD1.x checkpoint and save it with safetensors at ``path``; returns ``path``.

    ``unet_kwargs``: ``attn2_key_scale``, ``attn2_out_scale``, ``out_scale`` (defaults are the measured ones).
    """
    import safetensors.torch

    sd = build_state_dict(seed, **unet_kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    safetensors.torch.save_file(sd, path, metadata={"format": "pt", "nulltext_p2p_tiny_seed": str(seed)})
    return path


if __name__ == "__main__":  # python tests/tiny_model.py OUT.safetensors [seed]  (ComfyUI on PYTHONPATH)
    print(build_tiny_sd15_checkpoint(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0))
