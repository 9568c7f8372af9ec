"""Null-text optimisation (Mokady et al. 2023): one unconditional embedding per DDIM step.

Reference semantics (``NullInversion.null_optimization`` of the authors' notebook):
for sampling step i, start from the previous step's embedding, run a fresh Adam with
lr = base_lr * (1 - i / 100) for up to ``inner_steps`` iterations on
MSE(DDIM step of x_cur with guided eps, z_{T-i-1}) (with a flow schedule: the Euler step with the guided
velocity, the same loop); the update of an iteration is applied and *then* the loop
stops if that iteration's loss (measured before the update) was below ``epsilon + i * 2e-5``.
Then x_cur moves one guided DDIM step with the kept embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .ddim import EpsFn, Schedule, guided_eps


@dataclass
class NullTextSettings:
    """Optimisation settings; the defaults are the reference's."""

    guidance: float = 7.5
    inner_steps: int = 10
    epsilon: float = 1e-5
    lr: float = 1e-2
    epsilon_growth: float = 2e-5  # threshold grows by this per step
    lr_decay: float = 0.01  # lr * (1 - i * lr_decay)


class NonFiniteLossError(ValueError):
    """The loss (or the latent it is measured on) became NaN or infinite at ``step``: the model overflowed (fp16)
    or its inputs were not finite. Raised at once instead of optimising the remaining steps on NaN."""

    def __init__(self, step: int, steps: int, loss: float) -> None:
        self.step, self.steps, self.loss = step, steps, loss
        super().__init__(f"the loss became {loss} at step {step + 1} of {steps}")


@dataclass
class NullTextResult:
    embeddings: torch.Tensor  # [steps, *null_shape], float32
    iterations: list[int] = field(default_factory=list)  # inner iterations run per step
    losses: list[float] = field(default_factory=list)  # last measured loss per step (NaN: inner_steps 0, none measured)
    final_latent: Optional[torch.Tensor] = None  # x after the last guided step: the reconstruction


def optimize_null_embeddings(
    eps_fn: EpsFn,
    schedule: Schedule,
    trajectory: torch.Tensor,
    cond: torch.Tensor,
    null_init: torch.Tensor,
    settings: NullTextSettings = NullTextSettings(),
    on_iteration: Optional[Callable[[int, int, bool], None]] = None,
    eps_uncond_fn: Optional[EpsFn] = None,
) -> NullTextResult:
    """Optimise the per-step null embeddings along the pivot ``trajectory`` ([steps + 1, ...], z_0 ... z_T).

    ``eps_fn`` must let gradients flow into its context argument. ``on_iteration(step, iteration, stopped)``
    is called after every inner iteration (progress bars, cancel checks). ``eps_uncond_fn`` (default
    ``eps_fn``) evaluates the unconditional branch. The embedding and Adam run in float32 whatever the model's
    dtype.
    """
    eps_u_fn = eps_fn if eps_uncond_fn is None else eps_uncond_fn
    steps = schedule.steps
    if trajectory.shape[0] != steps + 1:
        raise ValueError(f"trajectory has {trajectory.shape[0]} latents, the schedule needs {steps + 1}")
    w = float(settings.guidance)
    null = null_init.detach().to(torch.float32).clone()
    cond = cond.detach()
    x_cur = trajectory[-1].detach()
    kept: list[torch.Tensor] = []
    result = NullTextResult(embeddings=torch.empty(0))
    for i in range(steps):
        t = schedule.model_level(i)
        target = trajectory[steps - 1 - i].detach()
        null = null.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([null], lr=settings.lr * (1.0 - i * settings.lr_decay))
        with torch.no_grad():
            eps_c = eps_fn(x_cur, t, cond).detach()
        threshold = settings.epsilon + i * settings.epsilon_growth
        iters, loss_value = 0, float("nan")
        for j in range(settings.inner_steps):
            with torch.enable_grad():
                eps_u = eps_u_fn(x_cur, t, null)
                prev = schedule.step(x_cur, guided_eps(eps_u, eps_c, w), i)
                loss = F.mse_loss(prev.float(), target.float())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(i, steps, loss_value)
            iters = j + 1
            stop = loss_value < threshold
            if on_iteration is not None:
                on_iteration(i, j, stop)
            if stop:
                break
        null = null.detach()
        kept.append(null.clone())
        result.iterations.append(iters)
        result.losses.append(loss_value)
        with torch.no_grad():
            eps_u = eps_u_fn(x_cur, t, null)
            x_cur = schedule.step(x_cur, guided_eps(eps_u, eps_c, w), i).detach()
        if not bool(torch.isfinite(x_cur).all()):
            raise NonFiniteLossError(i, steps, float("nan"))
    result.embeddings = torch.stack(kept)
    result.final_latent = x_cur
    return result
