"""A tiny random-weight Qwen-Image model (MODEL, CLIP, VAE), built with the host's own classes at test time.

The real Qwen-Image (a 20 B-parameter MMDiT, a Qwen2.5-VL 7B text encoder, the Wan 2.1 VAE) cannot run on a CPU, so
``build_tiny_qwen_image(seed=0, dtype=torch.float32)`` assembles one the way the host's loaders assemble the real
files, with small configurations. Nothing is downloaded; the weights are random and fully determined by ``seed``:

* MODEL: ``comfy.supported_models.QwenImage(QWEN_IMAGE_UNET_CONFIG)`` -> ``get_model({})`` -> ``comfy.model_base.
  QwenImage`` (``ModelType.FLUX``: the host's flow-matching ``ModelSamplingFlux`` + ``CONST``, shift 1.15 from the
  host's config; latent format ``Wan21``: 16 channels, per-channel mean/std, ``latent_dimensions`` 3), weights loaded
  strictly from a seeded state dict, wrapped in ``comfy.model_patcher.ModelPatcher`` (load device
  ``get_torch_device()``, offload ``unet_offload_device()``). As with the host's loaders, the weights have
  ``requires_grad`` True on 0.3.64 and False on 0.33.0.
* CLIP: ``comfy.sd.CLIP`` with the host's ``qwen_image.QwenImageTokenizer`` (the real Qwen2.5 tokenizer shipped with
  the host, the real chat template) and ``qwen_image.te()``, shrunk through the host's own ``qwen25_7b_model_config``
  model option (``TE_MODEL_OPTIONS``); the unused vision tower is set to None after building.
* VAE: a 16-channel, 8x ``comfy.sd.VAE`` that the host's own detection builds from a state dict (see "VAE").

MODEL (``comfy.ldm.qwen_image.model.QwenImageTransformer2DModel``, 340,480 parameters): 2 double-stream blocks, 2
heads of 32 (hidden 64), ``joint_attention_dim`` 64 (= the text encoder's hidden size, the context width), RoPE
axes (8, 12, 12) (summing to the head dim like the real 16 + 56 + 56 = 128), ``in_channels`` 64 = 16 latent
channels x 2x2 patch (what the host's detection reads from ``img_in.weight``), ``out_channels`` 16. It takes 5-D
latents [B, 16, 1, H, W] only (a 4-D one fails in ``process_img``); a 16x16 latent (128x128 image) is 8x8 = 64 image
tokens, after the text tokens in the joint sequence.

Sampling: ``calculate_sigmas(model_sampling, "simple", n)`` gives [1, 0.7595, 0] for 2 steps and
[1, 0.9045, 0.7595, 0.5128, 0] for 4; the model gets ``timestep = sigma`` and predicts a velocity. Going through
``CFGGuider`` / ``comfy.samplers`` directly (not ``comfy.sample`` / KSampler), pass a 5-D latent and noise:
``Wan21.process_in`` broadcasts a 4-D latent to the wrong shape and the model rejects it (the host's KSampler path
unsqueezes through ``comfy.sample.fix_empty_latent_channels``).

CLIP: Qwen2.5 "llama" stack with hidden 64, intermediate 128, 1 layer, 1 head, 1 KV head (``head_dim`` stays 128, a
class attribute), vocabulary 152064: 9.8 M parameters, float32. Like the real encoder it drops the chat template
before the prompt (34 tokens): ``clip.encode_from_tokens_scheduled(clip.tokenize("a cat sitting on a table"))``
gives context [1, 11, 64] (``[a, Ġcat, Ġsitting, Ġon, Ġa, Ġtable, <|im_end|>, Ċ, <|im_start|>, assistant, Ċ]``, so
'cat' is context position 1), ``""`` gives [1, 5, 64]; ``pooled_output`` None and no ``attention_mask`` (the host
drops an all-ones mask). Context rows have std 1 and are distinct (mean off-diagonal cosine 0.05; equal tokens give
near-equal rows). The host never pads: cond and uncond of different lengths run as separate model calls
(``cond_or_uncond`` [0], then [1]).

Batching two prompts in one call (measured): equal token counts batch as they are ([2, 11, 64] rows match single-
prompt calls to 2e-6). For different counts, pad the shorter context (e.g. with zeros) and give the conditioning an
**integer** ``attention_mask`` [B, N] (1 = token, 0 = padding): 0.33.0's ``QwenImage.extra_conds`` passes it on and
the model turns it into a key bias, so a padded row matches its unpadded call (2e-6 in the model, 5e-6 after a CFG
Euler step). A float 1/0 mask is added to the logits as is (masks nothing, and shifts the other row too). 0.3.64
drops the key in ``extra_conds`` and its attention ignores the mask anyway (padded row off by O(1)); there, adding the
key bias inside ``transformer_options["optimized_attention_override"]`` (its ``mask`` argument) matches to 2e-6.

VAE: on hosts whose detection reads the Wan 2.1 width from the state dict (``decoder.head.0.gamma``; 0.33.0) it is a
Wan 2.1-layout ``WanVAE`` of width ``WAN_VAE_DIM`` 8 (0.9 M parameters; the real one is 96 wide, 127 M), and VAEEncode
of a [1, 128, 128, 3] IMAGE gives a **5-D** latent [1, 16, 1, 16, 16] like the real Qwen-Image VAE. Where the
detection hard-codes width 96 (0.3.64: 127 M parameters, seconds per encode / decode on 2 cores) it is a 16-channel
TAESD (host's ``comfy.taesd.taesd.TAESD``, 2.5 M parameters): VAEEncode gives a **4-D** latent [1, 16, 16, 16] (like
``EmptySD3LatentImage``; KSampler makes it 5-D, so sampled latents are 5-D). 0.3.64's ``VAE.decode`` cannot decode a
5-D latent with a 2-D VAE (0.33.0 drops the singleton time axis itself), so the TAESD is built as
``TimeSqueezingVAE``, a ``comfy.sd.VAE`` subclass doing the same. ``vae="taesd"`` forces the TAESD on any host.
Both are calibrated on ``tiny_model.calibration_image(64)``: it encodes to model-space latents (after
``Wan21.process_in``) of mean 0 and std 1 per channel and decodes to an image of mean 0.5, std 0.25.

Text path and output scale (measured, 16x16 latent, ``rel(a, b) = ||v_a - v_b|| / ||v_b||``, sigma 0.95 ... 0.3)
-------------------------------------------------------------------------------------------------------------------
With plain initialisation the text barely matters (cond/uncond 0.014). ``TEXT_KEY_SCALE`` 3 multiplies the text-key
RMSNorm weights (image queries put 60 % of their attention on the text instead of 15 %; per-token maps vary over
space) and ``TEXT_VALUE_SCALE`` 4 the text values: cond/uncond 0.34-0.39, cat/dog (one word) 0.18-0.20,
cat/"a mountain lake at sunset with trees" 0.41-0.43. Velocity std 1.0; 2 CFG-4 Euler steps from noise give a latent
of std 3.7 (cat/dog 0.39 apart).

Initialisation
--------------
The host's ``comfy.ops`` layers skip weight initialisation, so every parameter and buffer is drawn explicitly from a
``torch.Generator`` seeded from ``seed``, in state-dict key order. MODEL: linear weights ~ N(0, 1/fan_in), biases
~ N(0, 0.01^2), RMSNorm weights 1, then the text scales above; ``proj_out`` is random, not zero (``out_scale``
optional). CLIP: token embeddings ~ N(0, 1) (token identity survives the one layer), linear weights
~ N(0, 0.25/fan_in), biases 0, RMSNorm weights 1. VAEs: see ``build_wan21_vae_state_dict`` /
``build_taesd16_state_dict``.

Cost (2-core CPU): build 0.5-0.9 s (MODEL 0.01 s, CLIP 0.6 s, VAE 0.1-0.3 s), encoding a prompt 5 ms, 2 CFG steps
on a 16x16 latent 25 ms, VAEEncode / VAEDecode of 128x128 50-65 ms.
"""

from __future__ import annotations

import math

import torch

from tiny_model import _draw, _fan_in, calibration_image, init_taesd_, prepare_host_cpu

#: ``unet_config`` of the tiny MMDiT (``QwenImageTransformer2DModel`` keyword arguments).
QWEN_IMAGE_UNET_CONFIG = {
    "image_model": "qwen_image",
    "patch_size": 2,
    "in_channels": 64,  # 16 latent channels x 2 x 2 patch, as the host's detection reads img_in.weight
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 32,
    "num_attention_heads": 2,
    "joint_attention_dim": 64,  # = TE hidden size
    "axes_dims_rope": (8, 12, 12),  # sums to attention_head_dim
}

#: Text-path scales (measured, see module docstring): every ``attn.norm_added_k.weight`` (RMSNorm of the text keys)
#: is multiplied by ``TEXT_KEY_SCALE`` and every ``attn.add_v_proj`` by ``TEXT_VALUE_SCALE``.
TEXT_KEY_SCALE = 3.0
TEXT_VALUE_SCALE = 4.0

#: Hidden size of the tiny text encoder = context width = ``joint_attention_dim``.
TE_HIDDEN = 64

#: The host's own text-encoder config override (``<model_name>_model_config``) plus the float32 dtype.
TE_MODEL_OPTIONS = {
    "qwen25_7b_model_config": {
        "hidden_size": TE_HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
    },
    "dtype": torch.float32,
}

#: Width of the tiny Wan 2.1-layout VAE (real: 96).
WAN_VAE_DIM = 8

#: Size of the VAE calibration image (64: 4x cheaper than the 128 the tests use; a 128 image lands close).
CALIBRATION_SIZE = 64

_SEED_MODEL, _SEED_TE, _SEED_VAE = 11, 12, 13


def _gen(seed: int, offset: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1000 + offset)


# ------------------------------------------------------------------------------------------------------------------
# MODEL
# ------------------------------------------------------------------------------------------------------------------
def build_qwen_image_state_dict(seed: int = 0, shapes: dict | None = None, text_key_scale: float = TEXT_KEY_SCALE,
                                text_value_scale: float = TEXT_VALUE_SCALE, out_scale: float = 1.0) -> dict:
    """Seeded state dict (float32, no key prefix) for the tiny ``QwenImageTransformer2DModel``.

    ``shapes``: {key: shape} of every parameter and buffer (default: read from a meta-device instance).
    ``text_key_scale`` / ``text_value_scale``: see the constants; ``out_scale`` multiplies ``proj_out`` (the
    predicted velocity).
    """
    prepare_host_cpu()
    if shapes is None:
        import comfy.ops
        from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

        meta = QwenImageTransformer2DModel(**QWEN_IMAGE_UNET_CONFIG, dtype=torch.float32, device="meta",
                                           operations=comfy.ops.disable_weight_init)
        shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    gen = _gen(seed, _SEED_MODEL)
    out = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if "norm" in name.rsplit(".", 2)[-2] and leaf == "weight" and len(shape) == 1:
            t = torch.ones(shape)  # RMSNorm (txt_norm, norm_q/k, norm_added_q/k)
        elif leaf == "weight" and len(shape) >= 2:
            t = _draw(shape, 1.0 / math.sqrt(_fan_in(shape)), gen)
        elif leaf == "bias":
            t = _draw(shape, 0.01, gen)
        else:  # any other buffer (none in the current host classes): seeded all the same
            t = _draw(shape, 0.01, gen) if len(shape) else torch.zeros(shape)
        if name.endswith("attn.norm_added_k.weight"):
            t = t * text_key_scale
        elif ".attn.add_v_proj." in name:
            t = t * text_value_scale
        elif name.startswith("proj_out."):
            t = t * out_scale
        out[name] = t
    return out


def build_tiny_qwen_image_model(seed: int = 0, dtype: torch.dtype = torch.float32, **scales):
    """The MODEL patcher alone (see module docstring); ``scales``: keyword arguments of
    ``build_qwen_image_state_dict`` (``text_key_scale``, ``text_value_scale``, ``out_scale``)."""
    prepare_host_cpu()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    model_config = comfy.supported_models.QwenImage(dict(QWEN_IMAGE_UNET_CONFIG))
    model_config.set_inference_dtype(dtype, None)
    base = model_config.get_model({}, "", device=mm.unet_offload_device())
    shapes = {k: tuple(v.shape) for k, v in base.diffusion_model.state_dict().items()}
    sd = {k: v.to(dtype) for k, v in build_qwen_image_state_dict(seed, shapes, **scales).items()}
    base.diffusion_model.load_state_dict(sd, strict=True)  # every key, right shapes
    for name, _ in base.diffusion_model.named_buffers():  # non-persistent buffers are not in the state dict
        if name not in sd:
            raise RuntimeError(f"tiny Qwen-Image: buffer {name} has no seeded value")
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


# ------------------------------------------------------------------------------------------------------------------
# CLIP
# ------------------------------------------------------------------------------------------------------------------
def build_tiny_qwen_image_clip(seed: int = 0):
    """The CLIP alone: host tokenizer and text-encoder classes, tiny config, seeded float32 weights."""
    prepare_host_cpu()
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.qwen_image as qwen_image

    target = comfy.supported_models_base.ClipTarget(qwen_image.QwenImageTokenizer, qwen_image.te())
    clip = comfy.sd.CLIP(target=target, embedding_directory=None, tokenizer_data={}, model_options=TE_MODEL_OPTIONS)
    stack = clip.cond_stage_model.qwen25_7b.transformer
    stack.visual = None  # unused 658 M-parameter vision tower (torch.empty); text encoding never touches it
    gen = _gen(seed, _SEED_TE)
    with torch.no_grad():
        for name, p in clip.cond_stage_model.state_dict(keep_vars=True).items():
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name and leaf == "weight":
                p.copy_(torch.ones_like(p))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(_draw(p.shape, 1.0, gen))
            elif leaf == "weight" and p.ndim >= 2:
                p.copy_(_draw(p.shape, 0.5 / math.sqrt(_fan_in(p.shape)), gen))
            elif p.is_floating_point():
                p.zero_()
    return clip


# ------------------------------------------------------------------------------------------------------------------
# VAE
# ------------------------------------------------------------------------------------------------------------------
def _wan21_stats():
    import comfy.latent_formats

    fmt = comfy.latent_formats.Wan21()
    return fmt.latents_mean.flatten().float(), fmt.latents_std.flatten().float(), float(fmt.scale_factor)


def build_wan21_vae_state_dict(seed: int = 0, dim: int = WAN_VAE_DIM) -> dict:
    """State dict (float32, no prefix) of the host's Wan 2.1 ``WanVAE`` at width ``dim``, calibrated.

    Convs ~ N(0, 1/fan_in) (every block is RMS-normalised), biases 0, RMS_norm gammas 1; then ``conv1``'s mean
    half is rescaled so ``calibration_image`` encodes to raw latents with the Wan 2.1 per-channel mean/std (model
    space mean 0, std 1) and the decoder head so that latent decodes to mean 0 / std 0.5 in [-1, 1] (0.5 / 0.25 as an
    IMAGE).
    """
    prepare_host_cpu()
    from comfy.ldm.wan.vae import WanVAE

    model = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True], dropout=0.0)
    gen = _gen(seed, _SEED_VAE)
    with torch.no_grad():
        for name, p in model.state_dict(keep_vars=True).items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma":
                p.fill_(1.0)
            elif leaf == "weight" and p.ndim >= 2:
                p.copy_(_draw(p.shape, 1.0 / math.sqrt(_fan_in(p.shape)), gen))
            else:
                p.zero_()
        mean_t, std_t, _ = _wan21_stats()
        x = calibration_image(CALIBRATION_SIZE).unsqueeze(2)  # [1, 3, 1, H, W] in [-1, 1]
        z = model.encode(x)
        mean, std = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4))
        w, b = model.conv1.weight, model.conv1.bias  # 1x1x1, 32 -> 32; the first 16 outputs are mu
        gain = std_t / std
        w[:16].mul_(gain.view(-1, 1, 1, 1, 1))
        b[:16].copy_((b[:16] - mean) * gain + mean_t)
        z = (z - mean.view(1, -1, 1, 1, 1)) * gain.view(1, -1, 1, 1, 1) + mean_t.view(1, -1, 1, 1, 1)  # = encode(x)
        head = model.decoder.head[-1]
        y = model.decode(z)
        mean, std = y.mean(dim=(0, 2, 3, 4)), y.std(dim=(0, 2, 3, 4))
        head.weight.mul_((0.5 / std).view(-1, 1, 1, 1, 1))
        head.bias.copy_((head.bias - mean) * 0.5 / std)
    return {k: v.detach().to(torch.float32).clone() for k, v in model.state_dict().items()}


def build_taesd16_state_dict(seed: int = 0) -> dict:
    """State dict (float32, no prefix) of the host's TAESD with 16 latent channels, calibrated like
    ``tiny_model.build_taesd_state_dict`` but to the Wan 2.1 per-channel latent mean/std."""
    prepare_host_cpu()
    from comfy.taesd.taesd import TAESD

    model = TAESD(latent_channels=16)
    init_taesd_(model, _gen(seed, _SEED_VAE + 100))
    with torch.no_grad():
        mean_t, std_t, _ = _wan21_stats()
        enc_out, dec_out = model.taesd_encoder[-1], model.taesd_decoder[-1]
        image = calibration_image(CALIBRATION_SIZE)
        z = model.encode(image)
        mean, std = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
        enc_out.weight.mul_((std_t / std).view(-1, 1, 1, 1))
        enc_out.bias.copy_((enc_out.bias - mean) * std_t / std + mean_t)
        z = (z - mean.view(1, -1, 1, 1)) * (std_t / std).view(1, -1, 1, 1) + mean_t.view(1, -1, 1, 1)  # = encode(image)
        y = model.taesd_decoder((z - model.vae_shift) * model.vae_scale)
        mean, std = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3))
        dec_out.weight.mul_((0.25 / std).view(-1, 1, 1, 1))
        dec_out.bias.copy_(0.5 - (mean - dec_out.bias) * 0.25 / std)
    return {k: v.detach().to(torch.float32).clone() for k, v in model.state_dict().items()}


_TIME_SQUEEZING_VAE = None


def _time_squeezing_vae_class():
    """``comfy.sd.VAE`` that drops a singleton time axis before decoding with a 2-D (latent_dim 2) VAE, as 0.33.0's
    ``VAE.decode`` does natively (0.3.64 passes the 5-D latent on and the 2-D convolutions fail)."""
    global _TIME_SQUEEZING_VAE
    if _TIME_SQUEEZING_VAE is None:
        import comfy.sd

        class TimeSqueezingVAE(comfy.sd.VAE):
            def _squeeze(self, samples):
                if self.latent_dim == 2 and samples.ndim == 5 and samples.shape[2] == 1:
                    return samples[:, :, 0]
                return samples

            def decode(self, samples_in, *args, **kwargs):
                return super().decode(self._squeeze(samples_in), *args, **kwargs)

            def decode_tiled(self, samples, *args, **kwargs):
                return super().decode_tiled(self._squeeze(samples), *args, **kwargs)

        _TIME_SQUEEZING_VAE = TimeSqueezingVAE
    return _TIME_SQUEEZING_VAE


def host_reads_wan21_vae_width() -> bool:
    """True when the host's ``comfy.sd.VAE`` detection takes the Wan 2.1 width from ``decoder.head.0.gamma``
    (0.33.0) instead of hard-coding 96 (0.3.64)."""
    import inspect

    import comfy.sd

    try:
        src = inspect.getsource(comfy.sd.VAE.__init__)
    except (OSError, TypeError):  # pragma: no cover
        return False
    return 'sd["decoder.head.0.gamma"].shape[0]' in src or "sd['decoder.head.0.gamma'].shape[0]" in src


def build_tiny_qwen_image_vae(seed: int = 0, kind: str = "auto"):
    """The VAE alone. ``kind``: "wan" (tiny Wan 2.1 layout, 5-D latents; needs a host that reads the width),
    "taesd" (16-channel TAESD, 4-D latents), or "auto" (wan where the host allows it, else taesd)."""
    prepare_host_cpu()
    import comfy.sd

    if kind == "auto":
        kind = "wan" if host_reads_wan21_vae_width() else "taesd"
    if kind == "wan":
        if not host_reads_wan21_vae_width():
            raise RuntimeError("this host's VAE detection builds every Wan 2.1 VAE 96 wide (127 M parameters): "
                               "use vae='taesd'")
        vae = comfy.sd.VAE(sd=build_wan21_vae_state_dict(seed))
        width = vae.first_stage_model.decoder.head[0].gamma.shape[0]
        if vae.latent_dim != 3 or vae.latent_channels != 16 or width != WAN_VAE_DIM:
            raise RuntimeError("the host did not build a tiny Wan 2.1 VAE from the tiny state dict")
        return vae
    if kind == "taesd":
        vae = _time_squeezing_vae_class()(sd=build_taesd16_state_dict(seed))
        if vae.latent_channels != 16:
            raise RuntimeError("the host did not build a 16-channel TAESD")
        return vae
    raise ValueError(f"unknown VAE kind {kind!r}")


# ------------------------------------------------------------------------------------------------------------------
def build_tiny_qwen_image(seed: int = 0, dtype: torch.dtype = torch.float32, *, vae: str = "auto"):
    """(MODEL patcher, CLIP, VAE) of the tiny Qwen-Image model; deterministic for a given ``seed``.

    ``vae``: see ``build_tiny_qwen_image_vae`` (default: the Wan 2.1 layout where the host's detection allows a
    small width, else the 16-channel TAESD).
    """
    patcher = build_tiny_qwen_image_model(seed, dtype)
    clip = build_tiny_qwen_image_clip(seed)
    return patcher, clip, build_tiny_qwen_image_vae(seed, vae)
