"""The DDIM timestep schedule of the reference implementation (diffusers DDIMScheduler as SD 1.x uses it).

"Leading" spacing with offset 1: for 50 steps the sampling timesteps are 981, 961, ..., 21, 1, and the step
after t = 1 lands on alpha-bar[0] (``set_alpha_to_one=False``), not on a clean image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .ddim import ddim_step


@dataclass(frozen=True)
class DDIMSchedule:
    """Sampling-order DDIM schedule.

    ``timesteps[i]`` is the timestep evaluated at sampling step ``i`` (descending); ``alphas_cumprod[i]`` its
    alpha-bar; ``final_alpha_cumprod`` where the last sampling step lands.
    """

    timesteps: tuple[int, ...]
    alphas_cumprod: tuple[float, ...]
    final_alpha_cumprod: float

    @classmethod
    def from_alphas_cumprod(cls, table: Sequence[float] | torch.Tensor, steps: int, offset: int = 1) -> "DDIMSchedule":
        """Build the schedule from the model's full alpha-bar table (1000 entries for SD)."""
        values = [float(v) for v in (table.tolist() if isinstance(table, torch.Tensor) else table)]
        n_train = len(values)
        if not 1 <= steps <= n_train:
            raise ValueError(f"steps must be between 1 and {n_train}, got {steps}")
        ratio = n_train // steps
        timesteps = [i * ratio + offset for i in range(steps)][::-1]
        if timesteps[0] >= n_train:
            raise ValueError(f"steps={steps} with offset {offset} exceeds the {n_train}-entry schedule")
        return cls(tuple(timesteps), tuple(values[t] for t in timesteps), values[0])

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def next_alpha_cumprod(self, i: int) -> float:
        """Alpha-bar that sampling step ``i`` lands on."""
        return self.alphas_cumprod[i + 1] if i + 1 < self.steps else self.final_alpha_cumprod

    def sampling_alphas(self) -> list[float]:
        """``steps + 1`` alpha-bars along sampling: each step's start, then the final landing point."""
        return list(self.alphas_cumprod) + [self.final_alpha_cumprod]

    def sigmas(self) -> torch.Tensor:
        """k-diffusion sigmas ``sqrt((1 - a) / a)`` of :meth:`sampling_alphas` (float32, ``steps + 1``)."""
        return torch.tensor([math.sqrt((1.0 - a) / a) for a in self.sampling_alphas()], dtype=torch.float32)

    def inversion_pairs(self) -> list[tuple[int, float, float]]:
        """For inversion step ``j`` (0 = from the clean latent): ``(timestep, alpha-bar from, alpha-bar to)``."""
        alphas = self.sampling_alphas()
        out = []
        for j in range(self.steps):
            i = self.steps - 1 - j  # the sampling step this inversion step undoes
            out.append((self.timesteps[i], alphas[i + 1], alphas[i]))
        return out

    @property
    def kind(self) -> str:
        """``"ddim"``: the model predicts eps in DDPM scaling (``core.flow.FlowSchedule`` is the flow-matching one)."""
        return "ddim"

    def model_level(self, i: int) -> int:
        """What the model is evaluated at for sampling step ``i``: its integer timestep."""
        return self.timesteps[i]

    def step(self, x: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        """Sampling step ``i``: deterministic DDIM from ``alphas_cumprod[i]`` to the next alpha-bar."""
        return ddim_step(x, eps, self.alphas_cumprod[i], self.next_alpha_cumprod(i))

    def inverse_step(self, x: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        """Undo sampling step ``i`` (DDIM inversion): from the alpha-bar step ``i`` lands on back to its start, with
        ``eps`` evaluated at step ``i``'s timestep (the reference's ``next_step``)."""
        return ddim_step(x, eps, self.next_alpha_cumprod(i), self.alphas_cumprod[i])

    def to_sampler(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The latent ``x`` at the start of step ``i`` (DDPM scaling) in k-diffusion scaling (the host sampler's)."""
        return x / math.sqrt(self.sampling_alphas()[i])

    def from_sampler(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Inverse of :meth:`to_sampler` (``i`` may be ``steps``: the landing point of the last step)."""
        return x * math.sqrt(self.sampling_alphas()[i])

    def step_of_sigma(self, sigma: float, rel_tol: float = 1e-3) -> int | None:
        """Index of the sampling step whose starting sigma is ``sigma``; None when it is not on this schedule."""
        sig = self.sigmas().tolist()[:-1]
        best = min(range(len(sig)), key=lambda i: abs(math.log(sig[i]) - math.log(max(sigma, 1e-12))))
        return best if abs(sig[best] - sigma) <= rel_tol * sig[best] else None
