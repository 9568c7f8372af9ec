"""The peer: the authors' null-text optimisation (``bench/reference_nti.py``) run on our model and inputs.

Imported once the host is set up and the pack importable as ``nulltext_p2p`` (``workload.start_host``)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from nulltext_p2p.host.text_condition import text_condition, unpack
from nulltext_p2p.host.unet import HostUNet, alphas_cumprod, recomputed_transformers
from reference_nti import ReferenceNullInversion


@contextmanager
def weights_require_grad(module, flag: bool = True) -> Iterator[None]:
    """Every weight of ``module`` requires grad (``flag`` True: a diffusers UNet's setting, the reference as published)
    or not (False: frozen) inside the block; afterwards the flags are as before and any gradients are dropped."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(flag)
        yield
    finally:
        for p, old in flags:
            p.requires_grad_(old)
            p.grad = None


def raw_unet(model, host_unet) -> Callable:
    """The reference's model call: the raw diffusion model (no host wrappers), eps for DDPM-scaled ``x`` at integer
    timestep ``t``. Inputs are cast to the model's compute dtype and the output to float32, as the host's
    ``apply_model`` does, so the reference's embedding and Adam stay float32 for a float16/bfloat16 model too. For
    SDXL the context is packed (``host.text_condition``: token rows + a pooled row) and the pooled vector enters the
    ADM input ``y`` exactly as in ours (``HostUNet.adm``), so the reference optimises the same tensor."""
    diffusion = model.model.diffusion_model
    dtype = host_unet.dtype
    dim = host_unet.pooled_dim

    def call(x, t, ctx):
        b = x.shape[0]
        tokens, pooled = unpack(ctx, dim)
        if tokens.shape[0] != b:
            tokens = tokens.expand(b, -1, -1)
        kw = {}
        if pooled is not None:
            kw["y"] = host_unet.adm(pooled.expand(b, -1) if pooled.shape[0] != b else pooled, x).to(dtype)
        tt = torch.full((b,), float(t), device=x.device, dtype=torch.float32)
        return diffusion(x.to(dtype), timesteps=tt, context=tokens.to(dtype), **kw).float()

    return call


@dataclass
class ReferenceNullText:
    """One run of the authors' ``null_optimization`` on ``model`` (see ``raw_unet``), its weights frozen or requiring
    grad, optionally under the same gradient checkpointing as ours with ``memory_saving``. Made once per phase
    (``reference_run``) and called for each timed run; returns ``{"recon", "iterations", "embs"}``."""

    model: Any
    host_unet: HostUNet
    source_c: torch.Tensor  # the source prompt's condition (packed for SDXL)
    null_c: torch.Tensor  # the "" prompt's condition, where the optimisation starts
    inversion: Any  # the DDIM inversion whose trajectory the optimisation follows
    steps: int
    guidance: float
    inner: int
    frozen: bool = True
    memory_saving: bool = False

    def __call__(self) -> dict:
        m = self.model
        diffusion = m.model.diffusion_model
        with weights_require_grad(diffusion, not self.frozen), recomputed_transformers(diffusion, self.memory_saving):
            ref = ReferenceNullInversion(raw_unet(m, self.host_unet), alphas_cumprod(m), self.steps, self.guidance)
            dev = m.load_device
            traj = [z.to(dev).clone() for z in self.inversion.latents]  # (an inversion made under inference mode)
            embs, iters, final = ref.null_optimization(traj, self.null_c.to(dev, torch.float32),
                                                       self.source_c.to(dev, torch.float32), self.inner, 1e-5)
            return {"recon": final.detach(), "iterations": iters, "embs": torch.stack(embs)}


def reference_run(model, inversion, source, null, steps: int, guidance: float, inner: int, frozen: bool = True,
                  memory_saving: bool = False) -> ReferenceNullText:
    """The reference's run on ``model`` for the prompts ``source`` and ``null`` (CONDITIONING); what is not the
    algorithm's work (the host UNet wrapper, the conditions) is made here, outside the timed call."""
    host_unet = HostUNet(model)
    source_c, null_c = (text_condition(model, c, "bench", n) for c, n in ((source, "source"), (null, "null")))
    return ReferenceNullText(model, host_unet, source_c, null_c, inversion, steps, guidance, inner, frozen,
                             memory_saving)
