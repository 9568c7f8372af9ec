"""Deterministic sampling and inversion along a schedule, and the DDIM (eta = 0) step in DDPM scaling.

The loops here step through a schedule object: :class:`core.schedule.DDIMSchedule` (SD: the model predicts eps,
DDIM steps) or :class:`core.flow.FlowSchedule` (flow-matching transformers: the model predicts the velocity,
Euler steps). Both have ``steps``, ``model_level(i)`` (what the model is evaluated at for sampling step ``i``),
``step(x, prediction, i)`` and ``inverse_step(x, prediction, i)``.

The DDIM step, with ``eps = UNet(x_t, t, context)``::

    x0  = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    x_s = sqrt(a_s) x0 + sqrt(1 - a_s) eps
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Protocol

import torch


class Schedule(Protocol):
    """What the loops need of a schedule (``DDIMSchedule``, ``FlowSchedule``)."""

    @property
    def steps(self) -> int: ...

    def model_level(self, i: int) -> float: ...

    def step(self, x: torch.Tensor, prediction: torch.Tensor, i: int) -> torch.Tensor: ...

    def inverse_step(self, x: torch.Tensor, prediction: torch.Tensor, i: int) -> torch.Tensor: ...


EpsFn = Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]
"""``eps_fn(x, level, context) -> prediction``: the model's prediction at ``schedule.model_level(i)`` (DDIM: eps in
DDPM scaling at an integer timestep; flow: the velocity at a sigma)."""

PairEpsFn = Callable[[torch.Tensor, float, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``eps_pair_fn(x, level, uncond_context, cond_context) -> (pred_uncond, pred_cond)``: both predictions at the
same latent and step from one model call (a batch of 2; on a GPU it costs little more than one of them). It must
equal ``(eps_fn(x, level, uncond), eps_fn(x, level, cond))`` up to float rounding."""


def ddim_step(x: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """Move ``x`` from noise level ``alpha_from`` to ``alpha_to`` (alpha-bars) along the predicted ``eps``."""
    x0 = (x - math.sqrt(1.0 - alpha_from) * eps) / math.sqrt(alpha_from)
    return math.sqrt(alpha_to) * x0 + math.sqrt(1.0 - alpha_to) * eps


def guided_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance ``eps_u + w (eps_c - eps_u)`` (the same on velocities: CFG is linear)."""
    return eps_uncond + guidance * (eps_cond - eps_uncond)


def ddim_invert(
    eps_fn: EpsFn,
    schedule: Schedule,
    z0: torch.Tensor,
    context: torch.Tensor,
    on_step: Optional[Callable[[int], None]] = None,
) -> torch.Tensor:
    """Inversion with the conditional prediction only (guidance 1): each sampling step undone, last one first,
    with the prediction at the less noisy latent and the step's own model level (the reference's DDIM inversion;
    with a flow schedule the same rule for the Euler step).

    Returns the whole pivot trajectory ``[steps + 1, *z0.shape]``: z_0 (the input) ... z_T.
    """
    latents = [z0]
    x = z0
    for j in range(schedule.steps):
        i = schedule.steps - 1 - j  # the sampling step this inversion step undoes
        eps = eps_fn(x, schedule.model_level(i), context)
        x = schedule.inverse_step(x, eps, i)
        latents.append(x)
        if on_step is not None:
            on_step(j)
    return torch.stack(latents)


def ddim_sample(
    eps_fn: EpsFn,
    schedule: Schedule,
    x_t: torch.Tensor,
    cond: torch.Tensor,
    null_embeddings: Optional[torch.Tensor] = None,
    guidance: float = 1.0,
    on_step: Optional[Callable[[int], None]] = None,
    eps_pair_fn: Optional[PairEpsFn] = None,
) -> torch.Tensor:
    """Plain guided sampling from ``x_t`` along ``schedule`` (used by tests and benchmarks; nodes sample through the
    host).

    ``null_embeddings[i]`` is step i's unconditional context; with guidance 1 it is not evaluated. With
    ``eps_pair_fn`` the two predictions of a guided step come from one call.
    """
    x = x_t
    for i in range(schedule.steps):
        t = schedule.model_level(i)
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
        x = schedule.step(x, eps, i)
        if on_step is not None:
            on_step(i)
    return x
