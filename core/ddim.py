"""Deterministic DDIM (eta = 0) steps in DDPM scaling, both directions, and DDIM inversion.

With ``eps = UNet(x_t, t, context)``::

    x0  = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    x_s = sqrt(a_s) x0 + sqrt(1 - a_s) eps
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .schedule import DDIMSchedule

EpsFn = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]
"""``eps_fn(x_t, timestep, context) -> eps``: the noise prediction in DDPM scaling."""

PairEpsFn = Callable[[torch.Tensor, int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``eps_pair_fn(x_t, timestep, uncond_context, cond_context) -> (eps_uncond, eps_cond)``: both predictions at the
same latent and step from one model call (a batch of 2; on a GPU it costs little more than one of them). It must
equal ``(eps_fn(x_t, t, uncond), eps_fn(x_t, t, cond))`` up to float rounding."""


def ddim_step(x: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """Move ``x`` from noise level ``alpha_from`` to ``alpha_to`` (alpha-bars) along the predicted ``eps``."""
    x0 = (x - math.sqrt(1.0 - alpha_from) * eps) / math.sqrt(alpha_from)
    return math.sqrt(alpha_to) * x0 + math.sqrt(1.0 - alpha_to) * eps


def guided_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance ``eps_u + w (eps_c - eps_u)``."""
    return eps_uncond + guidance * (eps_cond - eps_uncond)


def ddim_invert(
    eps_fn: EpsFn,
    schedule: DDIMSchedule,
    z0: torch.Tensor,
    context: torch.Tensor,
    on_step: Optional[Callable[[int], None]] = None,
) -> torch.Tensor:
    """DDIM inversion with the conditional prediction only (guidance 1).

    Returns the whole pivot trajectory ``[steps + 1, *z0.shape]``: z_0 (the input) ... z_T.
    """
    latents = [z0]
    x = z0
    for j, (t, a_from, a_to) in enumerate(schedule.inversion_pairs()):
        eps = eps_fn(x, t, context)
        x = ddim_step(x, eps, a_from, a_to)
        latents.append(x)
        if on_step is not None:
            on_step(j)
    return torch.stack(latents)


def ddim_sample(
    eps_fn: EpsFn,
    schedule: DDIMSchedule,
    x_t: torch.Tensor,
    cond: torch.Tensor,
    null_embeddings: Optional[torch.Tensor] = None,
    guidance: float = 1.0,
    on_step: Optional[Callable[[int], None]] = None,
    eps_pair_fn: Optional[PairEpsFn] = None,
) -> torch.Tensor:
    """Plain guided DDIM sampling from ``x_t`` (used by tests and benchmarks; nodes sample through the host).

    ``null_embeddings[i]`` is step i's unconditional context; with guidance 1 it is not evaluated. With
    ``eps_pair_fn`` the two predictions of a guided step come from one call.
    """
    x = x_t
    for i, t in enumerate(schedule.timesteps):
        if guidance != 1.0:
            if null_embeddings is None:
                raise ValueError("guidance != 1 needs null embeddings")
            if eps_pair_fn is not None:
                eps_u, eps_c = eps_pair_fn(x, t, null_embeddings[i], cond)
            else:
                eps_c = eps_fn(x, t, cond)
                eps_u = eps_fn(x, t, null_embeddings[i])
            eps = guided_eps(eps_u, eps_c, guidance)
        else:
            eps = eps_fn(x, t, cond)
        x = ddim_step(x, eps, schedule.alphas_cumprod[i], schedule.next_alpha_cumprod(i))
        if on_step is not None:
            on_step(i)
    return x
