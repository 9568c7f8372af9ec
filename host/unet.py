"""Noise predictions through the host's own model interface (``BaseModel.apply_model``).

``apply_model`` takes k-diffusion inputs (x = x0 + sigma eps, sigma) and returns the denoised x0; the algorithm
works in DDPM scaling (x_t = sqrt(a) x0 + sqrt(1 - a) eps). ``HostUNet.eps`` converts between the two, so model
patches applied upstream (LoRA weights, attention patches, APPLY_MODEL wrappers, ``model_function_wrapper``)
still take effect.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager, Iterator, Optional

import torch
import torch.utils.checkpoint

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension

from .compat import InferenceTensorsCloned, is_dynamic_patcher
from .text_condition import pooled_dim, unpack


def sd_family_name(patcher) -> Optional[str]:
    """"SD1.x", "SD2.x" or "SDXL" for an SD 1.x / 2.x model (4-channel SD latent, eps or v prediction) or an SDXL
    base model (pooled text vector plus size embeddings), each with the 1000-step discrete schedule; None otherwise."""
    base = patcher.model
    latent_format = getattr(base, "latent_format", None)
    ms = patcher.get_model_object("model_sampling")
    config_name = type(getattr(base, "model_config", None)).__name__
    sdxl = type(latent_format) is comfy.latent_formats.SDXL and isinstance(base, comfy.model_base.SDXL)
    ok_latent = type(latent_format) is comfy.latent_formats.SD15 or sdxl
    ok_sampling = isinstance(ms, comfy.model_sampling.ModelSamplingDiscrete) and getattr(ms, "num_timesteps", 0) == 1000
    ok_pred = isinstance(ms, comfy.model_sampling.EPS) and not isinstance(ms, comfy.model_sampling.CONST)
    if not (ok_latent and ok_sampling and ok_pred):
        return None
    if sdxl:
        return "SDXL"
    return "SD2.x" if "SD2" in config_name else "SD1.x"


def load_model(patcher) -> None:
    """Load the model on the host's chosen device (object patches only reach the model then)."""
    comfy.model_management.load_models_gpu([patcher])


def alphas_cumprod(patcher) -> torch.Tensor:
    """The model's alpha-bar table from its own model sampling (float64)."""
    ms = patcher.get_model_object("model_sampling")
    sig = ms.sigmas.detach().to("cpu", torch.float64)
    return 1.0 / (1.0 + sig * sig)


def weights_made_per_call(patcher) -> bool:
    """True where the layers may compute with weight tensors made at call time rather than with their parameters:
    dynamic VRAM (``compat.is_dynamic_patcher``) or weight functions (weight wrappers, low-VRAM LoRA patches) on a
    loaded model."""
    if is_dynamic_patcher(patcher):
        return True
    return any(getattr(m, "weight_function", None) or getattr(m, "bias_function", None)
               for m in patcher.model.diffusion_model.modules())


@contextlib.contextmanager
def grad_capable_weights(patcher) -> Iterator[None]:
    """Let autograd run through a loaded model whose weights were made under ``torch.inference_mode``; no weight
    gradients are ever computed.

    ComfyUI runs nodes under ``torch.inference_mode()`` and loads weights there, and inference tensors cannot be
    saved for backward. The plain patcher's inference-mode parameters/buffers are swapped for ordinary clones (one
    copy, made once); the originals (LoRA-patched weights included) are put back on exit, also on errors and Cancel,
    so the shared model is left exactly as it was. Where layers take their weights from tensors made per call
    (``weights_made_per_call``; under dynamic VRAM the parameters are not what the layers use, so they are not
    swapped), every inference tensor reaching a torch function is cloned as well (``InferenceTensorsCloned``).
    """
    per_call = weights_made_per_call(patcher)
    swap = not is_dynamic_patcher(patcher)
    swapped: list[tuple[dict, str, torch.Tensor]] = []
    frozen: list[torch.Tensor] = []
    try:
        with torch.inference_mode(False):
            for mod in patcher.model.modules():
                for store in (mod._parameters, mod._buffers):
                    for name, t in list(store.items()):
                        if t is None:
                            continue
                        if t.is_inference():
                            if swap:
                                clone = t.detach().clone()
                                store[name] = torch.nn.Parameter(clone, requires_grad=False) if isinstance(t, torch.nn.Parameter) else clone
                                swapped.append((store, name, t))
                        elif t.requires_grad:  # weights loaded outside inference mode: never compute their gradients
                            t.requires_grad_(False)
                            frozen.append(t)
        with InferenceTensorsCloned() if per_call else contextlib.nullcontext():
            yield
    finally:
        for store, name, t in reversed(swapped):
            store[name] = t
        for t in frozen:
            t.requires_grad_(True)


@contextlib.contextmanager
def recomputed_blocks(blocks: list[torch.nn.Module], around: Optional[Callable[[], ContextManager]] = None) -> Iterator[int]:
    """Gradient checkpointing of ``blocks`` while open (``memory_saving``): under autograd a block keeps only its
    inputs and is recomputed in the backward pass (``torch.utils.checkpoint``, non-reentrant). The arithmetic is the
    same, so results are unchanged; the backward costs about one more forward of the block. Forwards without
    gradients run as usual. The modules are restored on exit (also on errors and Cancel). Yields the number of
    blocks.

    ``around``: for blocks that change tensors in place (Flux, Chroma: ``saved_activations_copied``), a context each
    block runs in, on copies of its tensor inputs, both forward and when recomputed; the recomputation then runs the
    block as plain autograd does (reentrant checkpointing), which the context can make safe."""

    def recomputed(module: torch.nn.Module):
        plain = type(module).forward.__get__(module)

        def forward(*args, **kwargs):
            if not torch.is_grad_enabled():
                return plain(*args, **kwargs)
            if around is None:
                return torch.utils.checkpoint.checkpoint(plain, *args, use_reentrant=False, **kwargs)
            names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
            rest = {k: v for k, v in kwargs.items() if k not in names}

            def run(*flat):
                copies = [t.clone() if isinstance(t, torch.Tensor) else t for t in flat]
                with around():
                    return plain(*copies[: len(args)], **dict(zip(names, copies[len(args):])), **rest)
            return torch.utils.checkpoint.checkpoint(run, *args, *(kwargs[k] for k in names), use_reentrant=True)
        return forward

    try:
        for m in blocks:
            m.forward = recomputed(m)
        yield len(blocks)
    finally:
        for m in blocks:
            m.__dict__.pop("forward", None)


@contextlib.contextmanager
def saved_activations_copied() -> Iterator[None]:
    """While open, autograd saves a copy of each activation it keeps for the backward pass (weights, buffers and
    other tensors outside the graph are kept as they are).

    The host's Flux and Chroma blocks add to their residual streams in place (``x += gate * out``, 0.3.64's Chroma
    ``x.addcmul_(gate, out)``) after a layer norm saved the stream for its backward, which autograd refuses
    ("modified by an inplace operation"); the copy taken when it is saved is what the backward needs. Most
    activations have no other use after the forward, so the copy replaces them rather than adding to them."""

    def pack(t: torch.Tensor) -> torch.Tensor:
        return t if (t.grad_fn is None and not t.requires_grad) else t.clone()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def recomputed_transformers(diffusion_model: torch.nn.Module, enabled: bool = True):
    """:func:`recomputed_blocks` on every ``SpatialTransformer`` of the UNet (none when not ``enabled``)."""
    from comfy.ldm.modules.attention import SpatialTransformer

    return recomputed_blocks([m for m in diffusion_model.modules() if isinstance(m, SpatialTransformer)] if enabled else [])


class HostUNet:
    """``eps(x_t, t, context)`` in DDPM scaling through the host's ``apply_model``."""

    def __init__(self, patcher, sample_sigmas: Optional[torch.Tensor] = None, pooled_width: Optional[int] = None) -> None:
        self.patcher = patcher
        self.base = patcher.model
        self.device = patcher.load_device
        self.dtype = self.base.get_dtype() if getattr(self.base, "manual_cast_dtype", None) is None else self.base.manual_cast_dtype
        ms = patcher.get_model_object("model_sampling")
        self.sigma_table = ms.sigmas.detach().to("cpu", torch.float32).clone()
        self.model_options = patcher.model_options
        self.sample_sigmas = sample_sigmas
        self.calls = 0  # forward evaluations (benchmarks)
        # > 0: contexts are packed with a pooled row (SDXL; SD3 through ``pooled_width``)
        self.pooled_dim = pooled_dim(patcher) if pooled_width is None else pooled_width
        self._adm_sizes: dict = {}  # (h, w, pooled width) -> size embeddings on the device (see adm)

    def adm(self, pooled: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The ADM input ``y`` for pooled text vectors, with the size embeddings the host's sampler uses by default
        (image size = latent size x 8, no crop). Differentiable in ``pooled``.

        The host's ``encode_adm`` returns ``[pooled | size embeddings]`` and computes the size part on the CPU
        (moving the pooled vector there and back: a device sync per call). The size part does not depend on the
        pooled vector, so it is made once per image size with the host's ``encode_adm`` and kept on the device;
        ``y`` is then the same concatenation, made where the pooled vector is."""
        h, w = int(x.shape[-2]) * 8, int(x.shape[-1]) * 8
        key = (h, w, pooled.shape[-1])
        size = self._adm_sizes.get(key)
        if size is None:
            with torch.no_grad():
                probe = torch.zeros(1, pooled.shape[-1], dtype=torch.float32)
                full = self.base.encode_adm(pooled_output=probe, width=w, height=h, crop_w=0, crop_h=0,
                                            target_width=w, target_height=h, device=self.device)
            size = full[:, pooled.shape[-1]:].to(self.device, torch.float32)
            self._adm_sizes[key] = size
        pooled = pooled.to(self.device, torch.float32)
        return torch.cat([pooled, size.expand(pooled.shape[0], -1)], dim=1)

    def _transformer_options(self, sigma: torch.Tensor, cond_or_uncond: list[int]) -> dict:
        opts = comfy.patcher_extension.copy_nested_dicts(self.model_options.get("transformer_options", {}))
        comfy.patcher_extension.merge_nested_dicts(opts.setdefault("wrappers", {}), self.patcher.wrappers, copy_dict1=False)
        comfy.patcher_extension.merge_nested_dicts(opts.setdefault("callbacks", {}), self.patcher.callbacks, copy_dict1=False)
        opts["cond_or_uncond"] = cond_or_uncond
        opts["sigmas"] = sigma
        if self.sample_sigmas is not None:
            opts["sample_sigmas"] = self.sample_sigmas.to(self.device)
        return opts

    def _sigma_of(self, level) -> float:
        """The k-diffusion sigma of a model level (an integer timestep here)."""
        return float(self.sigma_table[level])

    def _model_input(self, x: torch.Tensor, sigma_f: float) -> torch.Tensor:
        """DDPM-scaled ``x`` in the host's k-diffusion scaling."""
        return x / math.sqrt(1.0 / (1.0 + sigma_f * sigma_f))

    def _y(self, pooled: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's ``y`` input for pooled text vectors (SDXL: the ADM vector)."""
        return self.adm(pooled, x)

    def _extra_inputs(self, pooled: Optional[torch.Tensor], x: torch.Tensor) -> dict:
        """The model inputs besides the context made from the packed row's part ``pooled`` ([B, pooled_dim], None
        without one): ``y`` here."""
        return {} if pooled is None else {"y": self._y(pooled, x)}

    def _denoise(self, x: torch.Tensor, sigma_f: float, ctx: torch.Tensor, pooled: Optional[torch.Tensor],
                 cond_or_uncond: list[int]) -> torch.Tensor:
        """One ``apply_model`` call on the batch ``x`` (float32 on the device) -> the prediction (float32):
        ``(x_k - denoised) / sigma`` with ``x_k`` the model input (eps for SD).

        ``cond_or_uncond`` lists the kind of each chunk of rows (host convention: 0 conditional, 1 unconditional)."""
        b = x.shape[0]
        sigma = torch.full((b,), sigma_f, device=self.device, dtype=torch.float32)
        x_k = self._model_input(x, sigma_f)
        if ctx.shape[0] != b:
            ctx = ctx.expand(b, *ctx.shape[1:])
        c = {"c_crossattn": ctx, "transformer_options": self._transformer_options(sigma, list(cond_or_uncond))}
        if pooled is not None and pooled.shape[0] != b:
            pooled = pooled.expand(b, -1)
        c.update(self._extra_inputs(pooled, x))
        wrapper = self.model_options.get("model_function_wrapper")
        self.calls += 1
        if wrapper is not None:
            denoised = wrapper(self.base.apply_model, {"input": x_k, "timestep": sigma, "c": c, "cond_or_uncond": list(cond_or_uncond)})
        else:
            denoised = self.base.apply_model(x_k, sigma, **c)
        return (x_k - denoised.float()) / sigma_f

    def eps(self, x_t: torch.Tensor, t: int, context: torch.Tensor, cond_or_uncond: int = 0) -> torch.Tensor:
        """Noise prediction for DDPM-scaled ``x_t`` at integer timestep ``t``; grad flows into ``context``."""
        ctx, pooled = unpack(context.to(self.device), self.pooled_dim)
        return self._denoise(x_t.to(self.device, torch.float32), self._sigma_of(t), ctx, pooled, [cond_or_uncond])

    def eps_pair(self, x_t: torch.Tensor, t: int, uncond: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps(x_t, t, uncond, 1), eps(x_t, t, cond, 0))`` from one call on a batch of 2 (``x_t`` one latent,
        [1, C, H, W]), rows ordered [uncond, cond] with the host's ``cond_or_uncond`` [1, 0], as its sampler batches
        them. Equal to the two single calls up to float rounding. Contexts of different lengths (not batchable) fall
        back to two calls."""
        if x_t.shape[0] != 1 or uncond.shape[0] != 1 or cond.shape[0] != 1 or uncond.shape[1:] != cond.shape[1:]:
            return self.eps(x_t, t, uncond, 1), self.eps(x_t, t, cond, 0)
        u_ctx, u_pooled = unpack(uncond.to(self.device), self.pooled_dim)
        c_ctx, c_pooled = unpack(cond.to(self.device), self.pooled_dim)
        dtype = torch.promote_types(u_ctx.dtype, c_ctx.dtype)
        ctx = torch.cat([u_ctx.to(dtype), c_ctx.to(dtype)])
        pooled = None if u_pooled is None else torch.cat([u_pooled.to(dtype), c_pooled.to(dtype)])
        x = x_t.to(self.device, torch.float32)
        eps = self._denoise(torch.cat([x, x]), self._sigma_of(t), ctx, pooled, [1, 0])
        return eps[0:1], eps[1:2]
