"""Inversion modes without optimisation, producing the same per-step values as null-text.

- Negative-prompt inversion (Miyake et al. 2023): the per-step "null" embedding is the source prompt's embedding,
  so guided sampling of the source row equals conditional sampling; no optimisation (about 30x faster).
- Direct Inversion (Ju et al. 2024, PnPInversion): keep the plain null embedding; for each step store the offset
  between the inversion latent and where one guided DDIM step from it lands; during editing add it to the source
  row only, which then follows the inversion trajectory exactly.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .ddim import EpsFn, PairEpsFn, Schedule, guided_eps


def negative_prompt_embeddings(cond: torch.Tensor, steps: int) -> torch.Tensor:
    """[steps, *cond.shape] copies of the source embedding (float32)."""
    return cond.detach().to(torch.float32).unsqueeze(0).repeat(steps, *([1] * cond.ndim))


def direct_inversion_offsets(
    eps_fn: EpsFn,
    schedule: Schedule,
    trajectory: torch.Tensor,
    cond: torch.Tensor,
    null: torch.Tensor,
    guidance: float,
    on_step: Optional[Callable[[int], None]] = None,
    eps_uncond_fn: Optional[EpsFn] = None,
    eps_pair_fn: Optional[PairEpsFn] = None,
) -> torch.Tensor:
    """Per-step offsets ``z_{T-i-1} - step_i(z_{T-i}, guided prediction)`` ([steps, *latent shape], trajectory dtype).

    The source branch starts on the trajectory and, with the offset added after every step, stays on it. The two
    predictions of a step are independent (same latent, two contexts): with ``eps_pair_fn`` they come from one
    call, otherwise from ``eps_uncond_fn`` (default ``eps_fn``) and ``eps_fn``. At guidance 1 the guided prediction
    is the conditional one, which is all that is evaluated (as the host's samplers skip the unconditional branch at
    CFG 1; guidance-distilled models such as Flux-dev have none).
    """
    eps_u_fn = eps_fn if eps_uncond_fn is None else eps_uncond_fn
    steps = schedule.steps
    offsets = []
    for i in range(steps):
        t = schedule.model_level(i)
        x = trajectory[steps - i]
        if guidance == 1.0:
            eps = eps_fn(x, t, cond)
        elif eps_pair_fn is not None:
            eps = guided_eps(*eps_pair_fn(x, t, null, cond), guidance)
        else:
            eps = guided_eps(eps_u_fn(x, t, null), eps_fn(x, t, cond), guidance)
        landed = schedule.step(x, eps, i)
        offsets.append(trajectory[steps - 1 - i] - landed)
        if on_step is not None:
            on_step(i)
    return torch.stack(offsets)
