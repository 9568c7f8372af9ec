"""Random-weight SD 1.5 and SDXL models at their real size, built with the host's own classes on the device.

For GPU measurements without a checkpoint file (none is downloaded; nothing here touches the network):

    patcher = build_random_model("sd15", device)            # 859.5 M-parameter SD 1.5 UNet
    patcher = build_random_model("sdxl", device, torch.bfloat16)   # 2.57 B-parameter SDXL UNet
    clip = random_clip(patcher)                               # a random-weight CLIP of the family (prompts)

``scale="full"`` uses the UNet configurations the host's own diffusers-to-ComfyUI detection writes for SD 1.5 and
SDXL (``comfy.model_detection.unet_config_from_diffusers_unet``), and the host's detection
(``model_config_from_unet_config``) must recognise them as ``SD15`` / ``SDXL``; the model is then assembled as
``comfy.sd.load_state_dict_guess_config`` assembles a loaded checkpoint: the host's supported-model config, its
``get_model`` (``comfy.model_base.BaseModel`` / ``SDXL`` with the host's ``UNetModel`` and ``comfy.ops``), the
host's weight dtype / manual-cast rule, ``comfy.model_patcher.ModelPatcher``. ``scale="tiny"`` keeps each layout
(levels, ResBlocks, transformer placement, context and ADM widths) at a narrow width and depth, so the same code
runs on a CPU in seconds.

Weights: the host's layers skip initialisation, so the UNet is created directly on ``device`` in ``dtype`` (one
allocation) and every tensor is then filled in place, in state-dict order, from one ``torch.Generator`` on that
device seeded with ``seed`` (each draw is made in float32, one tensor at a time, and cast into the weight, so
float32 and float16/bfloat16 models of one seed hold the same weights up to rounding). The scheme is that of
``tests/tiny_model.py``: linear/conv weights N(0, 1/fan_in), biases N(0, 0.01^2), norms weight 1 / bias 0, every
cross-attention key projection x3 and output projection x4 (text matters), the final conv x0.5 (eps std about
0.3). Random weights give noise predictions with the cost of the real model, not its behaviour: use them for time
and memory, not for image quality. The weights depend on the device's random generator (CPU and CUDA differ).
"""

from __future__ import annotations

import inspect
import math
from typing import Optional

import torch

FAMILIES = ("sd15", "sdxl")

#: The host's own full-size configurations (``comfy.model_detection.unet_config_from_diffusers_unet``, ComfyUI
#: 0.3.64 and 0.33.0), without the ``dtype`` entry (set from the build's dtype).
FULL_CONFIGS = {
    "sd15": {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
        "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
        "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    },
    "sdxl": {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
        "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
        "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    },
}

#: The same layouts, narrow and shallow (CPU checks of the GPU script): SD 1.5 at width 64 (8 heads of 8),
#: SDXL at width 32 with one transformer block wherever SDXL has 2 or 10 (heads of 64 channels from the second level).
TINY_OVERRIDES = {
    "sd15": {"model_channels": 64},
    "sdxl": {"model_channels": 32, "transformer_depth": [0, 0, 1, 1, 1, 1], "transformer_depth_middle": 1,
             "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1]},
}

#: Parameter counts of the full-size UNets (diffusers' SD 1.5 and SDXL base UNets have the same).
FULL_PARAMETERS = {"sd15": 859_520_964, "sdxl": 2_567_463_684}

ATTN2_KEY_SCALE, ATTN2_OUT_SCALE, OUT_SCALE = 3.0, 4.0, 0.5  # as tests/tiny_model.py


def unet_config(family: str, scale: str = "full") -> dict:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if scale not in ("full", "tiny"):
        raise ValueError(f"scale must be 'full' or 'tiny', got {scale!r}")
    cfg = {k: (list(v) if isinstance(v, list) else v) for k, v in FULL_CONFIGS[family].items()}
    if scale == "tiny":
        cfg.update({k: (list(v) if isinstance(v, list) else v) for k, v in TINY_OVERRIDES[family].items()})
    return cfg


def _model_config(family: str, scale: str, cfg: dict):
    """The host's supported-model config: detected from ``cfg`` for the full size (must be the family's class),
    constructed directly for the tiny layouts (detection keys on the full width)."""
    import comfy.model_detection
    import comfy.supported_models

    cls = {"sd15": comfy.supported_models.SD15, "sdxl": comfy.supported_models.SDXL}[family]
    if scale == "full":
        detected = comfy.model_detection.model_config_from_unet_config(dict(cfg))
        if type(detected) is not cls:
            raise RuntimeError(f"the host detects this {family} layout as {type(detected).__name__}, not {cls.__name__}")
        return detected
    return cls(dict(cfg))


def _set_inference_dtype(model_config, dtype, manual_cast, device) -> None:
    """``set_inference_dtype`` takes a ``device`` from host 0.33 on."""
    if "device" in inspect.signature(model_config.set_inference_dtype).parameters:
        model_config.set_inference_dtype(dtype, manual_cast, device=device)
    else:
        model_config.set_inference_dtype(dtype, manual_cast)


@torch.no_grad()
def init_random_weights(unet: torch.nn.Module, seed: int, device) -> None:
    """Fill every parameter/buffer of ``unet`` in place (see the module docstring); one generator on ``device``."""
    gen = torch.Generator(device=device).manual_seed(int(seed) * 1000 + 11)
    modules = dict(unet.named_modules())
    for name, p in unet.state_dict(keep_vars=True).items():
        parent, leaf = name.rsplit(".", 1) if "." in name else ("", name)
        module = modules.get(parent)
        if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            p.fill_(1.0 if leaf == "weight" else 0.0)
            continue
        if not p.is_floating_point():
            continue
        if leaf == "weight" and p.ndim > 1:
            std = 1.0 / math.sqrt(int(math.prod(p.shape[1:])))
        else:
            std = 0.01
        if parent.endswith(".attn2.to_k") and leaf == "weight":
            std *= ATTN2_KEY_SCALE
        elif parent.endswith(".attn2.to_out.0") and leaf == "weight":
            std *= ATTN2_OUT_SCALE
        elif parent == "out.2":
            std = std * OUT_SCALE if leaf == "weight" else 0.0
        draw = torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32)
        p.copy_(draw.mul_(std))
        del draw


def build_random_model(family: str, device, dtype: torch.dtype = torch.float32, seed: int = 0, scale: str = "full"):
    """A ``ModelPatcher`` of a random-weight ``family`` ("sd15" / "sdxl") UNet built on ``device`` in ``dtype``."""
    import comfy.model_management as mm
    import comfy.model_patcher

    device = torch.device(device)
    cfg = unet_config(family, scale)
    model_config = _model_config(family, scale, cfg)
    manual_cast = mm.unet_manual_cast(dtype, device, model_config.supported_inference_dtypes)
    _set_inference_dtype(model_config, dtype, manual_cast, device)
    base = model_config.get_model({}, "", device=device)
    init_random_weights(base.diffusion_model, seed, device)
    base.eval()
    offload = mm.unet_offload_device()
    return comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=offload)


def unet_parameters(patcher) -> int:
    return sum(p.numel() for p in patcher.model.diffusion_model.parameters())


def random_clip(patcher, seed: int = 0):
    """A random-weight CLIP for the model's family, built as the tests' tiny models build theirs (host classes; the
    tokenizer files ship with the host): SD 1.5 the 12-layer CLIP-L of ``tests/tiny_model.py``, SDXL the 3-layer
    CLIP-L + CLIP-G of ``tests/tiny_sdxl.py`` (real widths, pooled vector projected).

    Its prompts have the structure the UNet sees from a real CLIP (BOS, word tokens, EOS, then near-identical padding
    rows), which keeps the guided null-text optimisation well conditioned; independent N(0, 1) rows instead made the
    random UNets' optimisation chaotic (two float32-equal implementations drifted apart by ~lr per iteration)."""
    import comfy.model_base
    import comfy.sd
    from tiny_model import build_clip_state_dict

    target = patcher.model.model_config.clip_target({})
    if isinstance(patcher.model, comfy.model_base.SDXL):
        from tiny_sdxl import TE_MODEL_OPTIONS

        clip = comfy.sd.CLIP(target, embedding_directory=None, model_options=TE_MODEL_OPTIONS)
        enc = clip.cond_stage_model
        enc.clip_l.load_sd(build_clip_state_dict(seed, "sd1_clip_config.json", {"num_hidden_layers": 3}, projection=True))
        enc.clip_g.load_sd(build_clip_state_dict(seed, "clip_config_bigg.json", {"num_hidden_layers": 3}, projection=True))
    else:
        clip = comfy.sd.CLIP(target, embedding_directory=None)
        clip.cond_stage_model.clip_l.load_sd(build_clip_state_dict(seed))
    return clip


def activation_scale(patcher, x: torch.Tensor, t: int, context: torch.Tensor, y: Optional[torch.Tensor] = None) -> dict:
    """Largest |output| of any UNet submodule and the output's std for one raw forward (a float16-range check)."""
    unet = patcher.model.diffusion_model
    peak = [0.0]

    def hook(module, args, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            peak[0] = max(peak[0], float(output.detach().abs().max()))

    handles = [m.register_forward_hook(hook) for m in unet.modules()]
    try:
        with torch.no_grad():
            dt = unet.dtype
            kw = {} if y is None else {"y": y.to(x.device, dt)}
            tt = torch.full((x.shape[0],), float(t), device=x.device)
            out = unet(x.to(dt), timesteps=tt, context=context.to(x.device, dt), **kw)
    finally:
        for h in handles:
            h.remove()
    return {"max_abs_activation": peak[0], "output_std": float(out.float().std())}
