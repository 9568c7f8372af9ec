"""Random-weight SD3.5 Medium, Qwen-Image and Flux.1-dev transformers at their real size, built with the host's classes on the
device, and random text conditioning of the shapes their text encoders give (no text encoder, nothing downloaded).

    patcher = build_random_mmdit("sd35m", device, torch.bfloat16)               # 2.24 B-parameter MMDiT-X
    patcher = build_random_mmdit("qwen-image", device, torch.bfloat16)          # 60 blocks (20.4 B) or fewer
    text = RandomText(patcher, clip, seed)    # CONDITIONING of the right shapes for any prompt (see RandomText)

Configurations (``FULL_CONFIGS``) are what the host's own detection (``comfy.model_detection.detect_unet_config``)
writes for the published checkpoints, checked by ``tests/test_bench_tools.py`` on the meta device: the detection
run on the built model's own keys and shapes gives the configuration back, and ``model_config_from_unet_config``
picks ``comfy.supported_models.SD3`` / ``QwenImage``.

* SD3.5 Medium: ``depth`` 24 (hidden 1536, 24 heads of 64), MMDiT-X self-attention in the image stream of blocks
  0..12 (``x_block_self_attn_layers``), ``qk_norm`` "rms", ``pos_embed_max_size`` 384 (147 456 patches), ADM
  (pooled CLIP-L+G) 2048 wide, context 4096 wide -> 1536, 16 latent channels, patch 2.
* Flux.1-dev: 19 double-stream and 38 single-stream blocks of width 3072 (24 heads of 128, rotary axes 16+56+56),
  ``guidance_embed`` (the guidance-distilled model), ``vector_in`` 768 (CLIP-L pooled), context 4096 (T5-XXL), 16
  latent channels, patch 2: 11.9 B parameters.
* Qwen-Image: 60 ``QwenImageTransformerBlock`` of width 3072 (24 heads of 128), text width 3584 (Qwen2.5-VL 7B),
  64 input channels (16 x 2 x 2). ``layers`` < 60 keeps every width and drops blocks (the host's detection reads
  ``num_layers`` from the keys, so such a model is what it would build from a checkpoint with that many blocks);
  ``layers=None`` picks 60 where the device has at least ``QWEN_FULL_DEPTH_MIN_GIB`` of memory (H200), else
  ``QWEN_REDUCED_LAYERS`` (H100: 41 GB of bf16 weights plus the backward's activations at 1024 px do not leave
  room for the fp32-free headroom the host keeps).

``scale="tiny"`` keeps each layout (MMDiT-X blocks, qk-norm, 384-patch position table, 2048-wide ADM, 4096 / 3584
wide text) at depth 2 (SD3.5: hidden 128) and 2 blocks of 2 heads x 32 (Qwen), for CPU checks of ``bench/gpu.sh``.

Weights: the model is created directly on ``device`` in ``dtype`` and every tensor filled in place, in state-dict
order, from one ``torch.Generator`` on that device (each draw float32, cast into the weight), with the schemes of
``tests/tiny_sd3.py`` and ``tests/tiny_qwen_image.py`` (their constants are imported from there): linear/conv
weights N(0, 1/fan_in), biases N(0, 0.01^2), norm weights 1; SD3: the key third of every ``qkv`` x
``ATTN_KEY_SCALE``, ``final_layer.linear`` x ``OUT_SCALE``, ``context_embedder`` bias 0, ``pos_embed`` the 2-D
sin-cos table; Qwen: text-key norms x ``TEXT_KEY_SCALE``, text value projections x ``TEXT_VALUE_SCALE``. Random
weights have the real model's cost, not its behaviour: use them for time and memory.
"""

from __future__ import annotations

import inspect
import math
import zlib
from typing import Optional

import torch

KINDS = ("sd35m", "qwen-image", "flux-dev")

#: The host's detected configurations (ComfyUI 0.3.64 and 0.33.0 detect the same for both).
FULL_CONFIGS = {
    "sd35m": {
        "in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 24, "input_size": None,
        "adm_in_channels": 2048,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 1536}},
        "num_patches": 147456, "pos_embed_max_size": 384, "qk_norm": "rms", "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": list(range(13)),
    },
    "qwen-image": {"image_model": "qwen_image", "in_channels": 64, "num_layers": 60},
    # Flux.1-dev (the host adds the fields a newer host's FluxParams requires: tests/tiny_flux.with_host_fields)
    "flux-dev": {"image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "patch_size": 2,
                 "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24,
                 "depth": 19, "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True},
}

#: The narrow layouts (CPU checks). SD3.5: depth 2 -> hidden 128, MMDiT-X self-attention in block 0.
TINY_OVERRIDES = {
    "sd35m": {"depth": 2, "x_block_self_attn_layers": [0],
              "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}}},
    "qwen-image": {"num_layers": 2, "attention_head_dim": 32, "num_attention_heads": 2, "axes_dims_rope": (8, 12, 12)},
    "flux-dev": {"hidden_size": 128, "num_heads": 2, "depth": 2, "depth_single_blocks": 2, "axes_dim": [16, 24, 24]},
}

#: Parameter counts of the full-size transformers built from FULL_CONFIGS by the host (0.3.64 and 0.33.0): SD3.5
#: Medium's MMDiT-X 2.24 B (its model card says 2.5 B), Qwen-Image 20.4 B (41 GB in bf16). SD3.5's 384 x 384-patch
#: position table is a buffer, not counted (226 M values).
#: Flux.1-dev's 19 double- and 38 single-stream blocks 11.9 B (23.8 GB in bf16).
FULL_PARAMETERS = {"sd35m": 2_243_171_520, "qwen-image": 20_430_401_088, "flux-dev": 11_901_408_320}

#: Text widths: SD3 context (CLIP-L|G padded to T5-XXL's 4096, then T5) and pooled CLIP-L+G; Qwen2.5-VL hidden.
SD3_CONTEXT, SD3_POOLED, SD3_CLIP_WIDTH, SD3_CLIP_TOKENS = 4096, 2048, 2048, 77
QWEN_CONTEXT = 3584
FLUX_CONTEXT, FLUX_POOLED = 4096, 768  # T5-XXL context, CLIP-L pooled vector

#: Qwen-Image depth when ``layers`` is None: all 60 blocks on a device with this much memory, else the reduced depth.
QWEN_FULL_DEPTH_MIN_GIB = 100
QWEN_REDUCED_LAYERS = 30


def qwen_layers_for(device, layers: Optional[int] = None) -> int:
    """The Qwen-Image depth to build: ``layers``, or 60 / QWEN_REDUCED_LAYERS by the device's memory."""
    if layers:
        return int(layers)
    device = torch.device(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2 ** 30
        return 60 if total >= QWEN_FULL_DEPTH_MIN_GIB else QWEN_REDUCED_LAYERS
    return 60


def mmdit_config(kind: str, scale: str = "full", layers: Optional[int] = None) -> dict:
    """The unet_config of ``kind`` at ``scale`` ("full" / "tiny"); Qwen-Image with ``layers`` blocks if given."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if scale not in ("full", "tiny"):
        raise ValueError(f"scale must be 'full' or 'tiny', got {scale!r}")
    cfg = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
           for k, v in FULL_CONFIGS[kind].items()}
    if scale == "tiny":
        cfg.update(TINY_OVERRIDES[kind])
    if kind == "qwen-image" and layers:
        cfg["num_layers"] = int(layers)
    return cfg


def model_config(kind: str, cfg: dict):
    """The host's supported-model config for ``cfg``; the full layouts must be detected as the family's class."""
    import comfy.model_detection
    import comfy.supported_models

    cls = {"sd35m": comfy.supported_models.SD3, "qwen-image": comfy.supported_models.QwenImage,
           "flux-dev": comfy.supported_models.Flux}[kind]
    if kind == "flux-dev":
        from comfy.ldm.flux.model import FluxParams
        from tiny_flux import with_host_fields

        cfg = with_host_fields(cfg, FluxParams)
    detected = comfy.model_detection.model_config_from_unet_config(dict(cfg))
    if type(detected) is not cls:
        raise RuntimeError(f"the host detects this {kind} layout as {type(detected).__name__}, not {cls.__name__}")
    return detected


def _set_inference_dtype(config, dtype, manual_cast, device) -> None:
    """``set_inference_dtype`` takes a ``device`` from host 0.33 on."""
    if "device" in inspect.signature(config.set_inference_dtype).parameters:
        config.set_inference_dtype(dtype, manual_cast, device=device)
    else:
        config.set_inference_dtype(dtype, manual_cast)


def sincos_pos_embed(dim: int, grid: int, device) -> torch.Tensor:
    """[1, grid*grid, dim] 2-D sin-cos table (the layout of ``tests/tiny_sd3._sincos_pos_embed``), float32, made on
    ``device`` (the 384-grid SD3.5 table is 226 M values)."""
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter))
    coords = torch.arange(grid, dtype=torch.float32, device=device)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def one(pos):
        out = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([one(cols), one(rows)], dim=1).unsqueeze(0)


@torch.no_grad()
def init_random_weights(kind: str, net: torch.nn.Module, seed: int, device) -> None:
    """Fill every floating parameter and buffer of ``net`` in place (see the module docstring)."""
    from tiny_qwen_image import TEXT_KEY_SCALE, TEXT_VALUE_SCALE
    from tiny_sd3 import ATTN_KEY_SCALE, OUT_SCALE

    gen = torch.Generator(device=device).manual_seed(int(seed) * 1000 + 31)
    for name, p in net.state_dict(keep_vars=True).items():
        if not p.is_floating_point():
            continue
        leaf = name.rsplit(".", 1)[-1]
        if kind == "sd35m" and name == "pos_embed":
            p.copy_(sincos_pos_embed(p.shape[-1], int(round(math.sqrt(p.shape[1]))), p.device))
            continue
        if (leaf == "weight" or (leaf == "scale" and "norm" in name)) and p.ndim == 1:  # RMSNorm / LayerNorm scales
            p.fill_(1.0)
            continue
        if kind == "sd35m" and name == "context_embedder.bias":
            p.zero_()
            continue
        std = 1.0 / math.sqrt(int(math.prod(p.shape[1:]))) if (leaf == "weight" and p.ndim > 1) else 0.01
        draw = torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32).mul_(std)
        if kind == "sd35m":
            if name.endswith("attn.qkv.weight") or name.endswith("attn2.qkv.weight"):
                draw[p.shape[0] // 3: 2 * p.shape[0] // 3] *= ATTN_KEY_SCALE
            if name == "final_layer.linear.weight":
                draw *= OUT_SCALE
        elif ".attn.add_v_proj." in name:
            draw *= TEXT_VALUE_SCALE
        p.copy_(draw)
        del draw
    if kind == "qwen-image":
        for name, p in net.named_parameters():
            if name.endswith("attn.norm_added_k.weight"):
                p.mul_(TEXT_KEY_SCALE)


def build_random_mmdit(kind: str, device, dtype: torch.dtype = torch.bfloat16, seed: int = 0, scale: str = "full",
                       layers: Optional[int] = None):
    """A ``ModelPatcher`` of a random-weight ``kind`` ("sd35m" / "qwen-image") transformer built on ``device`` in
    ``dtype`` (the host's manual-cast rule applies); ``layers``: Qwen-Image's block count (None: by the device)."""
    import comfy.model_management as mm
    import comfy.model_patcher

    device = torch.device(device)
    if kind == "qwen-image" and scale == "full":
        layers = qwen_layers_for(device, layers)
    cfg = mmdit_config(kind, scale, layers)
    config = model_config(kind, cfg)
    manual_cast = mm.unet_manual_cast(dtype, device, config.supported_inference_dtypes)
    _set_inference_dtype(config, dtype, manual_cast, device)
    base = config.get_model({}, "", device=device)
    init_random_weights(kind, base.diffusion_model, seed, device)
    base.eval()
    return comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=mm.unet_offload_device())


def parameters(patcher) -> int:
    return sum(p.numel() for p in patcher.model.diffusion_model.parameters())


def structure_clip(kind: str, seed: int = 0):
    """A CLIP of the family's real tokenizers (the tests' tiny text stack: ``tests/tiny_sd3.build_tiny_sd3_clip``,
    ``tests/tiny_qwen_image.build_tiny_qwen_image_clip``): the Attention Controller maps words to token positions
    with it, and its encodings give each prompt's token count (Qwen) and padding mask; their values are replaced by
    ``RandomText``."""
    if kind == "sd35m":
        from tiny_sd3 import build_tiny_sd3_clip

        return build_tiny_sd3_clip(seed)
    if kind == "flux-dev":
        from tiny_flux import build_tiny_flux_clip

        return build_tiny_flux_clip(seed)
    from tiny_qwen_image import build_tiny_qwen_image_clip

    return build_tiny_qwen_image_clip(seed)


class RandomText:
    """Text conditioning of the shapes the family's real text encoders give, with seeded N(0, 1) values, made from a
    tiny CLIP's encoding of the same prompt (its token count and padding mask): SD3 context [b, 154, 4096] (the 77
    CLIP rows zero beyond column 2048, as the host pads CLIP-L|G to T5's width) + ``pooled_output`` [b, 2048];
    Qwen-Image [b, n, 3584] (n: the prompt's tokens after the chat template; padded rows zero). One prompt always
    gets the same values (seeded by ``seed`` and the text)."""

    def __init__(self, kind: str, clip, seed: int = 0) -> None:
        self.kind, self.clip, self.seed = kind, clip, int(seed)
        self.width = {"sd35m": SD3_CONTEXT, "qwen-image": QWEN_CONTEXT, "flux-dev": FLUX_CONTEXT}[kind]
        self.pooled = {"sd35m": SD3_POOLED, "qwen-image": 0, "flux-dev": FLUX_POOLED}[kind]

    def randomize(self, conditioning: list, key: str) -> list:
        """``conditioning`` (one entry, b rows) with its values replaced, seeded by ``key``."""
        tokens, extras = conditioning[0][0], dict(conditioning[0][1])
        gen = torch.Generator().manual_seed(self.seed * 1000003 + zlib.crc32(key.encode()))
        b, n = int(tokens.shape[0]), int(tokens.shape[1])
        out = torch.randn(b, n, self.width, generator=gen)
        if self.kind == "sd35m":
            out[:, :SD3_CLIP_TOKENS, SD3_CLIP_WIDTH:] = 0.0
        if self.pooled:
            extras["pooled_output"] = torch.randn(b, self.pooled, generator=gen)
        mask = extras.get("attention_mask")
        if mask is not None:
            out = out * (mask.reshape(b, n, 1) > 0).to(out.dtype)
        return [[out, extras]]

    def encode(self, text: str) -> list:
        from helpers import encode  # tests/helpers.py

        return self.randomize(encode(self.clip, text), text)
